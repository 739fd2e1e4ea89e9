/*
 * Connection limits of `pitr-agent serve`, so that clients that connect and say nothing (or
 * a flood of them) can neither take all of the agent's file descriptors nor spin its event
 * loop, and the orchestrator still gets through:
 *
 *  - at most `max_connections` connections at once. When that many are open, the listener
 *    pauses (further clients wait in the kernel's backlog) and the oldest connection that has
 *    not finished its TLS handshake is closed to make room; connections past the handshake
 *    are never closed for room, they end as the HTTP layer ends them;
 *  - a connection whose TLS handshake has not finished `handshake_timeout_s` seconds after it
 *    was accepted is closed;
 *  - when accept() fails (no file descriptor left, EMFILE or ENFILE, or anything else) while
 *    a client waits, the listener pauses for AGENT_CONN_ACCEPT_BACKOFF_MS instead of retrying
 *    at once in a busy loop, and, when it was for want of a descriptor, the oldest connection
 *    still in its handshake is closed to give one back.
 *
 * Each kind of event is logged as a warning at most once a second (agent/log-limit.h), with
 * the number of repeats held back in between. Everything here runs on the event loop's
 * thread.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include <event2/event.h>
#include <event2/listener.h>
#include <openssl/ssl.h>

#define AGENT_CONN_DEFAULT_MAX           64
#define AGENT_CONN_DEFAULT_HANDSHAKE_S   5
#define AGENT_CONN_ACCEPT_BACKOFF_MS     100

typedef struct AgentConnLimits AgentConnLimits;

/* How many connections to serve at once when `asked` (0: AGENT_CONN_DEFAULT_MAX) were asked
 * for and the process may open `open_files_limit` files (RLIMIT_NOFILE). By default at most
 * half of that limit, which leaves the rest to jobs, PostgreSQL connections and logs; a number
 * given explicitly is kept, and *ret_over_half tells whether it is more than half. */
unsigned agent_conn_max(unsigned asked, uint64_t open_files_limit, bool *ret_over_half);

/* Take charge of `listener` (the one evhttp accepts on; `listen_desc` names it in messages).
 * At most one per process: libevent hands the listener's error callback evhttp's pointer, not
 * ours. -ENOMEM, or -EBUSY when limits are already installed. */
int agent_conn_limits_new(struct event_base *base, struct evconnlistener *listener,
                          const char *listen_desc, unsigned max_connections,
                          unsigned handshake_timeout_s, AgentConnLimits **ret);
/* Connections still open are no longer counted. Call before evhttp_free(), which frees the
 * listener. */
AgentConnLimits *agent_conn_limits_free(AgentConnLimits *l);

/* Count the connection of the server-side `ssl` (just made for an accepted socket) from now
 * until `ssl` is freed, and start its handshake deadline. -ENOMEM when it cannot be tracked. */
int agent_conn_track(AgentConnLimits *l, SSL *ssl);

/* Connections open now. */
unsigned agent_conn_count(const AgentConnLimits *l);
