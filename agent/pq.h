/*
 * libpq conveniences shared by the agent and the orchestrator: cleanup functions, and the
 * length of an error message without libpq's trailing newline, for one-line log messages
 * ("... could not connect: %.*s", pq_message_len(msg), msg).
 */
#pragma once

#include <stddef.h>
#include <string.h>

#include <libpq-fe.h>

#include "common/macro.h"

DEFINE_CLEANUP_FUNC(PGconn *, PQfinish)
DEFINE_CLEANUP_FUNC(PGresult *, PQclear)

static inline int pq_message_len(const char *msg)
{
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == ' '))
        n--;
    return (int)n;
}
