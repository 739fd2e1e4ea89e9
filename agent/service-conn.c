#include "agent/service-conn.h"

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <event2/util.h>

#include "agent/log-limit.h"
#include "agent/service-tls.h"
#include "common/log.h"
#include "common/macro.h"
#include "common/time-util.h"

typedef struct Conn Conn;
struct Conn {
    AgentConnLimits *limits; /* NULL once the limits are gone */
    SSL *ssl;
    struct event *deadline;
    Conn *prev, *next; /* every tracked connection, oldest first */
    bool is_closing;   /* shut down here; evhttp frees it when it sees the end of the stream */
};

struct AgentConnLimits {
    struct event_base *base;
    struct evconnlistener *listener;
    char *listen_desc;
    unsigned max, handshake_timeout_s;
    unsigned count;
    Conn *oldest, *newest;
    bool is_at_max, is_backing_off, is_paused;
    struct event *backoff;
    AgentLogLimit accept_log, max_log, timeout_log;
};

static int conn_index = -1;
static pthread_once_t conn_index_once = PTHREAD_ONCE_INIT;
/* libevent hands the listener's error callback the listener's user data, which is evhttp's:
 * the one set of limits of the process is found here instead. */
static AgentConnLimits *installed;

static void _printf_(2, 3) log_limited(AgentLogLimit *limit, const char *fmt, ...)
{
    uint64_t held_back;
    if (!agent_log_limit_pass(limit, mono_now(), &held_back))
        return;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (held_back)
        log_warning("%s (%" PRIu64 " similar messages suppressed)", msg, held_back);
    else
        log_warning("%s", msg);
}

static void update_listener(AgentConnLimits *l)
{
    bool pause = l->is_at_max || l->is_backing_off;
    if (pause == l->is_paused)
        return;
    l->is_paused = pause;
    if (pause)
        evconnlistener_disable(l->listener);
    else
        evconnlistener_enable(l->listener);
}

static bool is_in_handshake(const Conn *c)
{
    return !c->is_closing && SSL_get_fd(c->ssl) >= 0 && !SSL_is_init_finished(c->ssl);
}

static Conn *oldest_in_handshake(AgentConnLimits *l)
{
    for (Conn *c = l->oldest; c; c = c->next)
        if (is_in_handshake(c))
            return c;
    return NULL;
}

/* End a connection that is still in its handshake. Not freed here: evhttp owns it, sees the
 * end of the stream at its next read, and frees it, which ends the tracking. */
static void conn_close(Conn *c, char *peer, size_t peer_size)
{
    int fd = SSL_get_fd(c->ssl);
    agent_tls_peer_address(fd, peer, peer_size);
    agent_tls_conn_closing(c->ssl);
    shutdown(fd, SHUT_RDWR);
    c->is_closing = true;
}

static void deadline_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    Conn *c = arg;
    if (!c->limits || !is_in_handshake(c))
        return;
    char peer[80];
    conn_close(c, peer, sizeof(peer));
    log_limited(&c->limits->timeout_log,
                "closed the connection from %s: no TLS handshake within %u s", peer,
                c->limits->handshake_timeout_s);
}

static void backoff_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    AgentConnLimits *l = arg;
    l->is_backing_off = false;
    update_listener(l);
}

static bool is_client_waiting(struct evconnlistener *listener)
{
    struct pollfd p = { .fd = evconnlistener_get_fd(listener), .events = POLLIN };
    return poll(&p, 1, 0) > 0 && (p.revents & POLLIN);
}

static void accept_error_cb(struct evconnlistener *listener, void *arg)
{
    int err = EVUTIL_SOCKET_ERROR(); /* first: anything below may change errno */
    (void)arg;
    AgentConnLimits *l = installed;
    if (!l || l->listener != listener)
        return;
    bool is_out_of_fds = err == EMFILE || err == ENFILE;
    /* Linux fails accept() with EMFILE before it looks at the queue: once the connection just
     * accepted took the last descriptor, the next try fails though no client waits. Nothing
     * was refused then, and the listener only wakes up again for a new client. */
    if (is_out_of_fds && !is_client_waiting(listener))
        return;
    /* A client waits but no descriptor is left: the oldest handshake that has not finished
     * gives one back. */
    Conn *victim = is_out_of_fds ? oldest_in_handshake(l) : NULL;
    char peer[80] = "";
    if (victim)
        conn_close(victim, peer, sizeof(peer));
    log_limited(&l->accept_log, "could not accept a connection on %s: %s; pausing for %u ms%s%s",
                l->listen_desc, strerror(err), AGENT_CONN_ACCEPT_BACKOFF_MS,
                victim ? " and closing the oldest connection still in its TLS handshake, from "
                       : "",
                peer);
    l->is_backing_off = true;
    update_listener(l);
    event_add(l->backoff, &(struct timeval){ .tv_usec = AGENT_CONN_ACCEPT_BACKOFF_MS * 1000 });
}

static void conn_unlink(AgentConnLimits *l, Conn *c)
{
    *(c->prev ? &c->prev->next : &l->oldest) = c->next;
    *(c->next ? &c->next->prev : &l->newest) = c->prev;
    c->prev = c->next = NULL;
}

/* The SSL object is freed with its connection: the end of every tracked connection. */
static void conn_ex_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl,
                         void *argp)
{
    (void)parent, (void)ad, (void)idx, (void)argl, (void)argp;
    Conn *c = ptr;
    if (!c)
        return; /* an SSL object that is not a served connection (libpq's) */
    AgentConnLimits *l = c->limits;
    if (l) {
        conn_unlink(l, c);
        l->count--;
        if (l->is_at_max && l->count < l->max) {
            l->is_at_max = false;
            update_listener(l);
        }
    }
    if (c->deadline)
        event_free(c->deadline);
    free(c);
}

static void conn_index_init(void)
{
    conn_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, conn_ex_free);
}

unsigned agent_conn_max(unsigned asked, uint64_t open_files_limit, bool *ret_over_half)
{
    uint64_t half = MAX(open_files_limit / 2, 1);
    *ret_over_half = asked > half;
    if (asked)
        return asked;
    return (unsigned)MIN((uint64_t)AGENT_CONN_DEFAULT_MAX, half);
}

int agent_conn_limits_new(struct event_base *base, struct evconnlistener *listener,
                          const char *listen_desc, unsigned max_connections,
                          unsigned handshake_timeout_s, AgentConnLimits **ret)
{
    if (installed)
        return -EBUSY;
    pthread_once(&conn_index_once, conn_index_init);
    if (conn_index < 0)
        return -ENOMEM;
    AgentConnLimits *l = calloc(1, sizeof(*l));
    if (!l)
        return -ENOMEM;
    *l = (AgentConnLimits){
        .base = base,
        .listener = listener,
        .listen_desc = strdup(listen_desc),
        .max = MAX(max_connections, 1),
        .handshake_timeout_s = handshake_timeout_s,
        .backoff = evtimer_new(base, backoff_cb, l),
        .accept_log = AGENT_LOG_LIMIT_INIT(1, 1),
        .max_log = AGENT_LOG_LIMIT_INIT(1, 1),
        .timeout_log = AGENT_LOG_LIMIT_INIT(1, 5),
    };
    if (!l->listen_desc || !l->backoff) {
        if (l->backoff)
            event_free(l->backoff);
        free(l->listen_desc);
        free(l);
        return -ENOMEM;
    }
    evconnlistener_set_error_cb(listener, accept_error_cb);
    installed = l;
    *ret = l;
    return 0;
}

AgentConnLimits *agent_conn_limits_free(AgentConnLimits *l)
{
    if (!l)
        return NULL;
    /* libevent may free the last connections later, as it finalizes them: they must find
     * nothing of the limits then. */
    while (l->oldest) {
        Conn *c = l->oldest;
        conn_unlink(l, c);
        c->limits = NULL;
        event_free(c->deadline);
        c->deadline = NULL;
    }
    evconnlistener_set_error_cb(l->listener, NULL);
    event_free(l->backoff);
    free(l->listen_desc);
    if (installed == l)
        installed = NULL;
    free(l);
    return NULL;
}

int agent_conn_track(AgentConnLimits *l, SSL *ssl)
{
    Conn *c = calloc(1, sizeof(*c));
    if (!c)
        return -ENOMEM;
    c->deadline = evtimer_new(l->base, deadline_cb, c);
    if (!c->deadline || !SSL_set_ex_data(ssl, conn_index, c)) {
        if (c->deadline)
            event_free(c->deadline);
        free(c);
        return -ENOMEM;
    }
    c->limits = l;
    c->ssl = ssl;
    c->prev = l->newest;
    *(l->newest ? &l->newest->next : &l->oldest) = c;
    l->newest = c;
    l->count++;
    evtimer_add(c->deadline, &(struct timeval){ .tv_sec = l->handshake_timeout_s });

    uint64_t failures;
    if (agent_log_limit_flush(&l->accept_log, mono_now(), &failures))
        log_warning("accepting connections on %s again (%" PRIu64 " more failures of accept() "
                    "since the last message)",
                    l->listen_desc, failures);
    if (l->count < l->max)
        return 0;
    /* Full: new clients wait in the backlog, and the oldest handshake that has not finished
     * (this one has no socket yet) makes room for the next. */
    l->is_at_max = true;
    update_listener(l);
    Conn *victim = oldest_in_handshake(l);
    char peer[80];
    if (victim) {
        conn_close(victim, peer, sizeof(peer));
        log_limited(&l->max_log,
                    "%u connections are open, the most this agent serves at once "
                    "(--max-connections): closed the oldest one still in its TLS handshake, "
                    "from %s",
                    l->count, peer);
    } else {
        log_limited(&l->max_log,
                    "%u connections are open, the most this agent serves at once "
                    "(--max-connections): new clients wait until one ends",
                    l->count);
    }
    return 0;
}

unsigned agent_conn_count(const AgentConnLimits *l)
{
    return l->count;
}
