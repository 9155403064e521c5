/*
 * directory_hash.c - the hash directory (runtime/providers.h): an actor
 * lives on the silo that placement gives it under the current view
 * (consistent hashing, runtime/view.h). There is no table to keep:
 * registering is agreeing with placement, unregistering is nothing. Each
 * worker keeps its own reference to the view, so a lookup reads no shared
 * state and takes no lock.
 */
#include <stdlib.h>

#include "cluster/directory_hash.h"

typedef struct hash_pw {
    qk_view *view;                /* the view this worker routes by */
} hash_pw;

static void *h_attach(void *self, qk_worker *w)
{
    (void)self;
    (void)w;
    return calloc(1, sizeof(hash_pw));
}

static void h_detach(void *self, void *pw)
{
    (void)self;
    hash_pw *h = pw;
    if (h)
        qk_view_unref(h->view);
    free(h);
}

static void h_set_view(void *pw, qk_view *v)
{
    hash_pw *h = pw;
    qk_view *old = h->view;
    h->view = v;
    qk_view_unref(old);
}

static quark_err h_lookup(void *pw, const qk_actor_key *key, qk_dir_entry *out, qk_op *op)
{
    (void)op;
    const qk_view *v = ((hash_pw *)pw)->view;
    int owner = qk_view_owner(v, key->hash);
    out->member = owner;
    out->silo = owner >= 0 ? v->members[owner].addr : NULL;
    out->incarnation = owner >= 0 ? v->members[owner].incarnation : 0;
    out->activation = 0;
    return QUARK_OK;
}

/* Placement decides: the entry that holds is the placement owner's. */
static quark_err h_register(void *pw, const qk_actor_key *key, qk_dir_entry *out, qk_op *op)
{
    return h_lookup(pw, key, out, op);
}

static quark_err h_unregister(void *pw, const qk_actor_key *key, const qk_dir_entry *mine,
                              qk_op *op)
{
    (void)pw;
    (void)key;
    (void)mine;
    (void)op;
    return QUARK_OK;
}

const qk_directory_ops qk_directory_hash = {
    .name = "hash",
    .follows_placement = true,
    .attach = h_attach,
    .detach = h_detach,
    .set_view = h_set_view,
    .lookup = h_lookup,
    .register_activation = h_register,
    .unregister_activation = h_unregister,
};
