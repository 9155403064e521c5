/*
 * greeter_actor.c - the Greeter actor: each activation (one per actor id)
 * counts the greetings it gave. Quark runs one turn at a time per activation,
 * so the state needs no lock.
 */
#include <stdio.h>

#include "greeter_actor.h"

struct greeter_state {
    int64_t count; /* zeroed when the activation is created */
};

static quark_err greet(quark_actor *self, const Demo__Greeter__GreetRequest *req,
                       Demo__Greeter__GreetReply *reply)
{
    struct greeter_state *st = quark_actor_state(self);
    const char *name = req->name[0] ? req->name : "stranger";
    const char *fmt = "Hello, %s! (greeting #%lld from %s)";
    long long n = (long long)(st->count + 1);

    /* The reply text lives in turn memory: freed after the reply is sent. */
    int len = snprintf(NULL, 0, fmt, name, n, quark_actor_id(self));
    char *text = len < 0 ? NULL : quark_actor_alloc(self, (size_t)len + 1);
    if (text == NULL)
        return quark_actor_fail(self, QUARK_ENOMEM, "no memory for the greeting");
    snprintf(text, (size_t)len + 1, fmt, name, n, quark_actor_id(self));

    st->count++;
    reply->text = text;
    reply->count = st->count;
    return QUARK_OK;
}

static quark_err count(quark_actor *self, const Demo__Greeter__CountRequest *req,
                       Demo__Greeter__GreetReply *reply)
{
    (void)req;
    const struct greeter_state *st = quark_actor_state(self);
    reply->count = st->count;
    return QUARK_OK;
}

static const demo_greeter_Greeter_methods greeter_methods = {
    .Greet = greet,
    .Count = count,
};

QUARK_ACTOR_TYPE(greeter_actor,
                 .interface = &demo_greeter_Greeter_interface,
                 .methods = &greeter_methods,
                 .map_to_interface = 1,
                 .state_size = sizeof(struct greeter_state))
