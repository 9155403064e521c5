// interop.test.mjs - a stock gRPC client (@grpc/grpc-js + @grpc/proto-loader)
// calls Quark actors through ActorService (proto/quark/actor_service.proto)
// over real sockets to a counter-silo process, whose port is in QUARK_PORT
// (run_interop.sh starts the silo and sets it). The arguments and results of
// CounterActor (examples/counter/counter.proto) are encoded with protobufjs.
// The cases run one after the other, in this order, against the same silo.
import { test as nodeTest, after } from 'node:test';
import assert from 'node:assert/strict';
import http2 from 'node:http2';
import net from 'node:net';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import grpc from '@grpc/grpc-js';
import protoLoader from '@grpc/proto-loader';
import protobuf from 'protobufjs';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const PORT = Number(process.env.QUARK_PORT);
if (!Number.isInteger(PORT) || PORT <= 0)
  throw new Error('QUARK_PORT is not set: run tests/interop/run_interop.sh path/to/counter-silo');
const ADDR = `127.0.0.1:${PORT}`;

const COUNTER = 'quark.examples.CounterActor';
const QUARK_EACTOR = -12;
const MiB = 1 << 20;
const { status: S } = grpc;

// Every case gets a timeout, so one that hangs fails alone and the others report.
const test = (name, fn) => nodeTest(name, { timeout: 30000 }, fn);

// ---- ActorService for grpc-js ----------------------------------------------
const serviceDef = protoLoader.loadSync(`${ROOT}/proto/quark/actor_service.proto`, {
  keepCase: true, longs: String, enums: String, defaults: true,
});
const { ActorService } = grpc.loadPackageDefinition(serviceDef).quark;

// ---- CounterActor messages for protobufjs ----------------------------------
const counterRoot = protobuf.loadSync(`${ROOT}/examples/counter/counter.proto`);
const T = (n) => counterRoot.lookupType(`quark.examples.${n}`);
const IncrementRequest = T('IncrementRequest');
const GetRequest = T('GetRequest');
const SleepRequest = T('SleepRequest');
const FailRequest = T('FailRequest');
const CounterValue = T('CounterValue');
const enc = (type, obj) => Buffer.from(type.encode(type.create(obj)).finish());
const decValue = (buf) => Number(CounterValue.toObject(CounterValue.decode(buf), { longs: String }).value ?? 0);

// ---- clients and calls -----------------------------------------------------
const clients = [];
const streams = []; // server streams, cancelled at the end if a failed case left one open
function newClient() {
  const c = new ActorService(ADDR, grpc.credentials.createInsecure());
  clients.push(c);
  return c;
}
function subscribe(actor_type, actor_id) {
  const call = client.StreamActorEvents({ actor_type, actor_id });
  streams.push(call);
  return call;
}
after(() => {
  for (const s of streams) s.cancel();
  for (const c of clients) c.close();
});
const client = newClient(); // shared by the cases below: one channel, one HTTP/2 connection

const deadlineIn = (ms) => new Date(Date.now() + ms);

// InvokeActor as a promise: resolves to the ActorInvocationResponse, rejects
// with the grpc-js ServiceError (code, details, metadata).
function invoke(req, { c = client, metadata = new grpc.Metadata(), deadlineMs = 10000 } = {}) {
  return new Promise((resolve, reject) => {
    c.InvokeActor(req, metadata, { deadline: deadlineIn(deadlineMs) }, (err, res) =>
      (err ? reject(err) : resolve(res)));
  });
}

const counterReq = (id, method, args) => ({ actor_type: COUNTER, actor_id: id, method_name: method, serialized_args: args });
const increment = (id, delta, opts) => invoke(counterReq(id, 'Increment', enc(IncrementRequest, { delta })), opts);
const get = (id, opts) => invoke(counterReq(id, 'Get', enc(GetRequest, {})), opts);

// A successful invocation: grpc OK and error_code 0; returns CounterValue.value.
async function okValue(promise) {
  const res = await promise;
  assert.equal(res.error_code, 0, `error_code ${res.error_code}: ${res.error_message}`);
  assert.equal(res.error_message, '');
  return decValue(res.serialized_result);
}

// A call that must fail with grpc-status `code` and a message containing `text`.
async function expectStatus(promise, code, text) {
  let res;
  try {
    res = await promise;
  } catch (err) {
    assert.equal(err.code, code,
      `wanted grpc-status ${code} (${S[code]}), got ${err.code} (${S[err.code]}): ${err.details}`);
    if (text !== undefined)
      assert.ok(err.details.includes(text), `grpc-message ${JSON.stringify(err.details)} lacks ${JSON.stringify(text)}`);
    return err;
  }
  assert.fail(`wanted grpc-status ${code} (${S[code]}), got OK with ${JSON.stringify(res)}`);
}

// Poll `cond` until it holds or `ms` pass (no fixed sleeps hoping for the best).
async function waitUntil(cond, ms, what) {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) assert.fail(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

// ---- DurableCounter: persistent state, reached by its explicit type name ----
const DURABLE = 'DurableCounter';
const STATE_DB = process.env.QUARK_STATE_DB;

test('DurableCounter: each Increment is in the silo\'s SQLite file when its reply arrives', async () => {
  assert.ok(STATE_DB, 'QUARK_STATE_DB is not set (run_interop.sh sets it)');
  for (let i = 1; i <= 3; i++) {
    const res = await invoke({ actor_type: DURABLE, actor_id: 'js-durable', method_name: 'Increment',
                               serialized_args: enc(IncrementRequest, { delta: 10 }) });
    assert.equal(res.error_code, 0, res.error_message);
    assert.equal(decValue(res.serialized_result), 10 * i);
    // Read the row with the sqlite3 command: its etag is the number of writes.
    const etag = execFileSync('sqlite3', [STATE_DB,
      "SELECT etag FROM quark_state WHERE type = 'DurableCounter' AND id = 'js-durable'"]).toString().trim();
    assert.equal(etag, String(i));
  }
});

// ---- success ---------------------------------------------------------------
test('Increment on a fresh id returns delta, again the sum; Get returns it', async () => {
  assert.equal(await okValue(increment('js-fresh', 5)), 5);
  assert.equal(await okValue(increment('js-fresh', 7)), 12);
  assert.equal(await okValue(get('js-fresh')), 12);
  assert.equal(await okValue(get('js-never-incremented')), 0);
});

test('a call after the silo idled 2 s, with a 1 s deadline, succeeds (no stale clock)', async () => {
  assert.equal(await okValue(increment('js-idle', 1)), 1);
  // The idle period is the point of this case: every connection of the silo is
  // quiet for longer than the next call's deadline.
  await new Promise((r) => setTimeout(r, 2000));
  const t0 = Date.now();
  assert.equal(await okValue(increment('js-idle', 1, { deadlineMs: 1000 })), 2);
  assert.ok(Date.now() - t0 < 1000);
});

test('200 concurrent InvokeActor calls on one channel all succeed; Get equals the sum', async () => {
  const deltas = Array.from({ length: 200 }, (_, i) => i + 1);
  const sum = deltas.reduce((a, b) => a + b, 0);
  const values = await Promise.all(deltas.map((d) => okValue(increment('js-conc', d))));
  // One turn at a time: each reply is a distinct partial sum, the last is the total.
  assert.equal(new Set(values).size, 200, 'replies are distinct partial sums');
  assert.equal(Math.max(...values), sum);
  assert.equal(await okValue(get('js-conc')), sum);
});

// ---- application errors ----------------------------------------------------
test('Fail: grpc OK with error_code QUARK_EACTOR (-12) and the message', async () => {
  const message = 'insufficient funds: balance 3 < 10';
  const res = await invoke(counterReq('js-fail', 'Fail', enc(FailRequest, { message })));
  assert.equal(res.error_code, QUARK_EACTOR);
  assert.equal(res.error_message, message);
});

// ---- framework errors as grpc-status ---------------------------------------
test('unknown actor type -> NOT_FOUND', async () => {
  await expectStatus(
    invoke({ actor_type: 'shop.Nothing', actor_id: '1', method_name: 'Get', serialized_args: Buffer.alloc(0) }),
    S.NOT_FOUND, "no actor registered for type name 'shop.Nothing'");
});

test('unknown method of a known type -> UNIMPLEMENTED', async () => {
  await expectStatus(invoke(counterReq('js-x', 'Decrement', Buffer.alloc(0))), S.UNIMPLEMENTED, 'has no method');
});

test('unknown gRPC method path -> UNIMPLEMENTED', async () => {
  const raw = new grpc.Client(ADDR, grpc.credentials.createInsecure());
  clients.push(raw);
  await expectStatus(new Promise((resolve, reject) => {
    raw.makeUnaryRequest('/quark.ActorService/Nope', (b) => b, (b) => b, Buffer.alloc(0),
      { deadline: deadlineIn(10000) }, (err, res) => (err ? reject(err) : resolve(res)));
  }), S.UNIMPLEMENTED);
});

test('undecodable serialized_args -> INVALID_ARGUMENT', async () => {
  // Field 1 (varint) whose varint never ends: no protobuf decoder accepts it.
  // (A silo that never answers shows as DEADLINE_EXCEEDED after the 5 s client deadline.)
  await expectStatus(invoke(counterReq('js-bad', 'Increment', Buffer.from([0x08, 0xff, 0xff, 0xff])), { deadlineMs: 5000 }),
    S.INVALID_ARGUMENT, 'could not be decoded');
});

test('deadline (grpc-timeout 200 ms) on Sleep 2000 ms -> DEADLINE_EXCEEDED, well before 2 s', async () => {
  const t0 = Date.now();
  await expectStatus(invoke(counterReq('js-sleep', 'Sleep', enc(SleepRequest, { ms: 2000 })), { deadlineMs: 200 }),
    S.DEADLINE_EXCEEDED);
  const took = Date.now() - t0;
  assert.ok(took < 1500, `took ${took} ms`);
  assert.ok(took >= 150, `DEADLINE_EXCEEDED after ${took} ms, before the 200 ms deadline passed`);
});

test('deadline_ms = 200 in the request (no gRPC deadline) on Sleep 2000 ms -> DEADLINE_EXCEEDED from the silo', async () => {
  // grpc-js enforces its own deadlines too; here only the silo knows the deadline.
  const t0 = Date.now();
  await expectStatus(invoke({ ...counterReq('js-sleep2', 'Sleep', enc(SleepRequest, { ms: 2000 })), deadline_ms: 200 }),
    S.DEADLINE_EXCEEDED);
  const took = Date.now() - t0;
  assert.ok(took < 1500, `took ${took} ms`);
  assert.ok(took >= 150, `DEADLINE_EXCEEDED after ${took} ms, before the 200 ms deadline passed`);
});

test('request over 4 MiB -> RESOURCE_EXHAUSTED; the channel goes on', async () => {
  const big = Buffer.alloc(4 * MiB + 1, 0x01);
  await expectStatus(invoke(counterReq('js-big', 'Increment', big)), S.RESOURCE_EXHAUSTED);
  assert.equal(await okValue(increment('js-big', 1)), 1);
});

test('quark-cluster-id: other on a silo of cluster default -> FAILED_PRECONDITION', async () => {
  const md = new grpc.Metadata();
  md.set('quark-cluster-id', 'other');
  await expectStatus(increment('js-cluster', 1, { metadata: md }), S.FAILED_PRECONDITION, 'cluster');
  const ok = new grpc.Metadata();
  ok.set('quark-cluster-id', 'default');
  assert.equal(await okValue(increment('js-cluster', 1, { metadata: ok })), 1);
});

// ---- actor event streams ---------------------------------------------------
test('StreamActorEvents: three Increments -> three CounterValue events 1,2,3; cancel; silo serves on', async () => {
  const id = 'js-ev';
  const events = [];
  let ended = null;
  const call = subscribe(COUNTER, id);
  call.on('data', (ev) => events.push(ev));
  call.on('error', (err) => { ended = err; });
  call.on('status', (st) => { ended ??= st; });

  // The stream sends nothing until the first event, so nothing says when the
  // subscription is in place: Increment by 0 (publishes value 0) until an
  // event shows that it is, then the three real Increments.
  const probeEnd = Date.now() + 10000;
  while (events.length === 0 && !ended) {
    assert.equal(await okValue(increment(id, 0)), 0);
    await waitUntil(() => events.length > 0 || ended, 200, 'a probe event').catch(() => {});
    assert.ok(Date.now() < probeEnd, 'no event within 10 s of subscribing');
  }
  assert.equal(ended, null, `stream ended early: ${ended?.code} ${ended?.details}`);

  for (let i = 1; i <= 3; i++)
    assert.equal(await okValue(increment(id, 1)), i);
  const real = () => events.filter((e) => decValue(e.payload) !== 0);
  await waitUntil(() => real().length >= 3 || ended, 10000, 'three events');
  assert.equal(ended, null, `stream ended early: ${ended?.code} ${ended?.details}`);

  const got = real();
  assert.deepEqual(got.map((e) => decValue(e.payload)), [1, 2, 3]);
  for (const e of events) {
    assert.equal(e.actor_id, id);
    assert.equal(e.actor_type, COUNTER);
    assert.equal(e.event_type, 'quark.examples.CounterValue');
  }
  const seqs = events.map((e) => BigInt(e.sequence));
  for (let i = 1; i < seqs.length; i++)
    assert.ok(seqs[i] > seqs[i - 1], `sequence not increasing: ${seqs.join(',')}`);

  call.cancel();
  await waitUntil(() => ended, 5000, 'the cancelled stream to end');
  assert.equal(ended.code, S.CANCELLED);
  // The silo dropped the subscriber and still serves, on this channel and a new one.
  assert.equal(await okValue(increment(id, 1)), 4);
  assert.equal(await okValue(get(id, { c: newClient() })), 4);
});

test('StreamActorEvents for an unknown type ends with NOT_FOUND', async () => {
  const call = subscribe('no.Such', 'x');
  const events = [];
  call.on('data', (ev) => events.push(ev));
  const err = await new Promise((resolve) => {
    call.on('error', resolve);
    call.on('status', (st) => { if (st.code === S.OK) resolve(st); });
  });
  assert.equal(err.code, S.NOT_FOUND, `got ${err.code} (${S[err.code]}): ${err.details}`);
  assert.equal(events.length, 0);
});

// ---- bad input through Node's own http2 and net ----------------------------
function h2session() {
  return new Promise((resolve, reject) => {
    const s = http2.connect(`http://${ADDR}`);
    s.once('connect', () => resolve(s));
    s.once('error', reject);
  });
}

// One request on `session`: resolves { headers, trailers, body } when the stream closes.
function h2request(session, headers, body) {
  return new Promise((resolve, reject) => {
    const req = session.request(headers);
    const out = { headers: null, trailers: {}, body: [] };
    req.on('response', (h) => { out.headers = h; });
    req.on('trailers', (t) => { out.trailers = t; });
    req.on('data', (d) => out.body.push(d));
    req.on('error', reject);
    req.on('close', () => resolve({ ...out, body: Buffer.concat(out.body), rstCode: req.rstCode }));
    req.setTimeout(10000, () => { req.close(); reject(new Error('no answer within 10 s')); });
    req.end(body);
  });
}

// A gRPC length-prefixed message (uncompressed).
function grpcFrame(msg) {
  const b = Buffer.alloc(5 + msg.length); // flag 0 (not compressed), length, message
  b.writeUInt32BE(msg.length, 1);
  msg.copy(b, 5);
  return b;
}
const ActorInvocationRequestPb = protobuf.loadSync(`${ROOT}/proto/quark/actor_service.proto`)
  .lookupType('quark.ActorInvocationRequest');

test('http2: content-type text/plain -> HTTP 415', async () => {
  const s = await h2session();
  try {
    const r = await h2request(s, {
      ':method': 'POST', ':path': '/quark.ActorService/InvokeActor', 'content-type': 'text/plain', te: 'trailers',
    }, 'hello');
    assert.equal(r.headers?.[':status'], 415);
  } finally {
    s.close();
  }
});

test('http2: GET on the service path -> HTTP 405', async () => {
  const s = await h2session();
  try {
    const r = await h2request(s, {
      ':method': 'GET', ':path': '/quark.ActorService/InvokeActor', 'content-type': 'application/grpc', te: 'trailers',
    });
    assert.equal(r.headers?.[':status'], 405);
  } finally {
    s.close();
  }
});

test('http2: hand-made gRPC request with grpc-timeout 200m on Sleep 2000 -> grpc-status 4 from the silo', async () => {
  const msg = Buffer.from(ActorInvocationRequestPb.encode(ActorInvocationRequestPb.create({
    actorType: COUNTER, actorId: 'js-h2-sleep', methodName: 'Sleep', serializedArgs: enc(SleepRequest, { ms: 2000 }),
  })).finish());
  const s = await h2session();
  try {
    const t0 = Date.now();
    const r = await h2request(s, {
      ':method': 'POST', ':path': '/quark.ActorService/InvokeActor', 'content-type': 'application/grpc',
      te: 'trailers', 'grpc-timeout': '200m',
    }, grpcFrame(msg));
    const took = Date.now() - t0;
    assert.equal(r.headers?.[':status'], 200);
    const st = r.trailers['grpc-status'] ?? r.headers['grpc-status'];
    assert.equal(String(st), String(S.DEADLINE_EXCEEDED), `grpc-status ${st}: ${r.trailers['grpc-message'] ?? r.headers['grpc-message']}`);
    assert.ok(took < 1500, `took ${took} ms`);
    assert.ok(took >= 150, `DEADLINE_EXCEEDED after ${took} ms, before the 200 ms deadline passed`);
  } finally {
    s.close();
  }
});

// Connect, send `bytes`, and resolve when the silo closes the socket.
function closedBySilo(bytes, ms = 5000) {
  return new Promise((resolve, reject) => {
    const sock = net.connect(PORT, '127.0.0.1');
    const timer = setTimeout(() => { sock.destroy(); reject(new Error(`the silo kept the socket open for ${ms} ms`)); }, ms);
    sock.on('connect', () => sock.write(bytes));
    sock.on('data', () => {}); // e.g. a GOAWAY
    sock.on('error', () => {}); // ECONNRESET is a close too
    sock.on('close', () => { clearTimeout(timer); resolve(); });
  });
}

test('raw garbage on a socket: the silo closes it', async () => {
  await closedBySilo(Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'));
  await closedBySilo(Buffer.from([0xde, 0xad, 0xbe, 0xef, 0x00, 0x01, 0x02, 0x03]));
  // A valid HTTP/2 preface followed by garbage instead of a SETTINGS frame.
  await closedBySilo(Buffer.concat([Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'), Buffer.alloc(64, 0xff)]));
});

test('after all of this a normal grpc-js call still succeeds (old and new channel)', async () => {
  assert.equal(await okValue(increment('js-after', 3)), 3);
  assert.equal(await okValue(increment('js-after', 4, { c: newClient() })), 7);
  assert.equal(await okValue(get('js-fresh')), 12);
});
