#include "orchestrator/agent-client.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>

#include "common/log.h"
#include "common/parse.h"
#include "common/time-util.h"

/* Replies are small JSON documents; anything this large is not the agent talking. */
#define MAX_REPLY (8 * 1024 * 1024)

struct OrchAgentClient {
    char *address;  /* normalized host:port */
    char *base_url; /* https://host:port */
    char *ca, *cert, *key;
    unsigned connect_ms, total_ms;
    CURL *curl;
    struct curl_slist *headers;
    char errbuf[CURL_ERROR_SIZE];
    char *error;
};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc;

/* curl_global_init is not thread-safe: do it once, before any client of any thread uses it. */
static void curl_init(void)
{
    curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

static int _printf_(3, 4) set_error(OrchAgentClient *c, int r, const char *fmt, ...)
{
    char *s = NULL;
    va_list ap;
    va_start(ap, fmt);
    if (vasprintf(&s, fmt, ap) < 0)
        s = NULL;
    va_end(ap);
    free(c->error);
    c->error = s;
    log_debug("agent client: %s", s ? s : "out of memory");
    return r;
}

const char *orch_agent_client_error(const OrchAgentClient *c)
{
    return c && c->error ? c->error : "";
}

const char *orch_agent_client_address(const OrchAgentClient *c)
{
    return c->address;
}

OrchAgentClient *orch_agent_client_free(OrchAgentClient *c)
{
    if (!c)
        return NULL;
    if (c->curl)
        curl_easy_cleanup(c->curl);
    curl_slist_free_all(c->headers);
    free(c->address);
    free(c->base_url);
    free(c->ca);
    free(c->cert);
    free(c->key);
    free(c->error);
    free(c);
    return NULL;
}

int orch_agent_client_new(const char *address, const OrchTlsFiles *tls, OrchAgentClient **ret)
{
    *ret = NULL;
    if (!tls || !tls->ca || !tls->cert || !tls->key)
        return -EINVAL;
    pthread_once(&curl_once, curl_init);
    if (curl_init_rc != CURLE_OK)
        return -ENOMEM;
    _cleanup_(orch_agent_client_freep) OrchAgentClient *c = calloc(1, sizeof(*c));
    if (!c)
        return -ENOMEM;
    c->connect_ms = ORCH_AGENT_CONNECT_TIMEOUT_MS;
    c->total_ms = ORCH_AGENT_CALL_TIMEOUT_MS;
    OrchAgentAddress a;
    int r = orch_agent_address_parse(address, &a);
    if (r < 0)
        return r;
    c->address = TAKE_PTR(a.normalized);
    orch_agent_address_done(&a);
    if (asprintf(&c->base_url, "https://%s", c->address) < 0) {
        c->base_url = NULL;
        return -ENOMEM;
    }
    c->ca = strdup(tls->ca);
    c->cert = strdup(tls->cert);
    c->key = strdup(tls->key);
    c->curl = curl_easy_init();
    struct curl_slist *h = curl_slist_append(NULL, "Accept: application/json");
    if (h)
        c->headers = h;
    /* No "Expect: 100-continue" round trip for our small bodies. */
    if (h && (h = curl_slist_append(c->headers, "Expect:")))
        c->headers = h;
    if (!c->ca || !c->cert || !c->key || !c->curl || !h)
        return -ENOMEM;
    CURL *e = c->curl;
    CURLcode cc = CURLE_OK;
#define SET(opt, val) (cc = cc != CURLE_OK ? cc : curl_easy_setopt(e, opt, val))
    SET(CURLOPT_ERRORBUFFER, c->errbuf);
    SET(CURLOPT_NOSIGNAL, 1L);
#if LIBCURL_VERSION_NUM >= 0x075500
    SET(CURLOPT_PROTOCOLS_STR, "https");
#endif
    /* Agents are inside the cluster; an https_proxy meant for the outside must not apply. */
    SET(CURLOPT_NOPROXY, "*");
    SET(CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2);
    SET(CURLOPT_CAINFO, c->ca);
    SET(CURLOPT_SSLCERT, c->cert);
    SET(CURLOPT_SSLCERTTYPE, "PEM");
    SET(CURLOPT_SSLKEY, c->key);
    SET(CURLOPT_SSLKEYTYPE, "PEM");
    SET(CURLOPT_SSL_VERIFYPEER, 1L);
    SET(CURLOPT_SSL_VERIFYHOST, 2L);
    SET(CURLOPT_HTTPHEADER, c->headers);
    SET(CURLOPT_USERAGENT, "pitr-orchestrator");
#undef SET
    if (cc != CURLE_OK)
        return -ENOMEM;
    *ret = TAKE_PTR(c);
    return 0;
}

void orch_agent_client_set_timeouts(OrchAgentClient *c, unsigned connect_ms, unsigned total_ms)
{
    if (connect_ms)
        c->connect_ms = connect_ms;
    if (total_ms)
        c->total_ms = total_ms;
}

typedef struct Reply {
    char *data;
    size_t len, cap;
    bool too_big;
} Reply;

static size_t write_cb(char *p, size_t size, size_t n, void *userdata)
{
    Reply *rp = userdata;
    size_t len = size * n;
    if (rp->len + len > MAX_REPLY) {
        rp->too_big = true;
        return 0;
    }
    if (rp->len + len + 1 > rp->cap) {
        size_t cap = MAX(rp->cap * 2, rp->len + len + 1);
        char *d = realloc(rp->data, cap);
        if (!d)
            return 0;
        rp->data = d;
        rp->cap = cap;
    }
    memcpy(rp->data + rp->len, p, len);
    rp->len += len;
    rp->data[rp->len] = 0;
    return len;
}

/* The agent refused our certificate: in TLS 1.3 the client finishes its handshake first, so
 * curl learns it from an alert, or only from the connection closing, at its first read or
 * write. */
static bool says_cert_refused(const char *msg)
{
    static const char *const alerts[] = { "alert unknown ca", "alert bad certificate",
                                          "alert certificate expired",
                                          "certificate required", "alert certificate unknown",
                                          "alert unsupported certificate",
                                          "alert access denied", "alert handshake failure" };
    for (size_t i = 0; i < ARRAY_SIZE(alerts); i++)
        if (strstr(msg, alerts[i]))
            return true;
    return false;
}

static int transport_error(OrchAgentClient *c, CURLcode rc, const char *path)
{
    const char *msg = c->errbuf[0] ? c->errbuf : curl_easy_strerror(rc);
    curl_off_t connect_us = 0, tls_us = 0;
    long new_conns = 0;
    curl_easy_getinfo(c->curl, CURLINFO_CONNECT_TIME_T, &connect_us);
    curl_easy_getinfo(c->curl, CURLINFO_APPCONNECT_TIME_T, &tls_us);
    curl_easy_getinfo(c->curl, CURLINFO_NUM_CONNECTS, &new_conns);
    switch (rc) {
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_CONNECT:
        return set_error(c, -ECONNREFUSED, "agent %s is not reachable: %s", c->address, msg);
    case CURLE_OPERATION_TIMEDOUT:
        if (connect_us == 0)
            return set_error(c, -ECONNREFUSED, "agent %s is not reachable: %s", c->address,
                             msg);
        if (tls_us == 0)
            return set_error(c, -ETIMEDOUT, "TLS handshake with agent %s timed out: %s",
                             c->address, msg);
        return set_error(c, -ETIMEDOUT, "agent %s: no reply to %s in time: %s", c->address,
                         path, msg);
    case CURLE_PEER_FAILED_VERIFICATION:
        return set_error(c, -EACCES, "TLS with agent %s failed: %s (the agent's certificate "
                                     "must be signed by the CA in \"%s\" and name the host)",
                         c->address, msg, c->ca);
    case CURLE_SSL_CERTPROBLEM:
        return set_error(c, -EACCES, "TLS with agent %s failed: %s (client certificate \"%s\", "
                                     "key \"%s\")",
                         c->address, msg, c->cert, c->key);
    case CURLE_SSL_CACERT_BADFILE:
        return set_error(c, -EACCES, "TLS with agent %s failed: %s (CA file \"%s\")",
                         c->address, msg, c->ca);
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS:
    case CURLE_SSL_ENGINE_NOTFOUND:
    case CURLE_SSL_ENGINE_SETFAILED:
    case CURLE_SSL_ENGINE_INITFAILED:
    case CURLE_SSL_CRL_BADFILE:
    case CURLE_USE_SSL_FAILED:
        return set_error(c, -EACCES, "TLS handshake with agent %s failed: %s%s", c->address,
                         msg,
                         says_cert_refused(msg)
                                 ? " (the agent refused this client's certificate: it must "
                                   "be signed by the cluster CA and valid)"
                                 : "");
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
        if (says_cert_refused(msg) || (new_conns > 0 && tls_us > 0))
            return set_error(c, -EACCES, "TLS with agent %s failed: the agent closed the "
                                         "connection right after the handshake, so it most "
                                         "likely refused this client's certificate \"%s\" "
                                         "(it must be signed by the cluster CA and valid; "
                                         "curl said: %s)",
                             c->address, c->cert, msg);
        return set_error(c, -ECONNRESET, "agent %s: connection lost during %s: %s",
                         c->address, path, msg);
    case CURLE_WRITE_ERROR:
        return set_error(c, -EPROTO, "agent %s: reply to %s is too large or could not be kept",
                         c->address, path);
    case CURLE_OUT_OF_MEMORY: return set_error(c, -ENOMEM, "out of memory");
    default:
        return set_error(c, -EIO, "agent %s: %s failed: %s", c->address, path, msg);
    }
}

/* One request. *ret_code and *ret_reply are set when the agent answered at all. */
static int request(OrchAgentClient *c, const char *method, const char *path, const char *body,
                   unsigned timeout_ms, long *ret_code, Reply *ret_reply)
{
    *ret_code = 0;
    *ret_reply = (Reply){ 0 };
    _cleanup_free_ char *url = NULL;
    if (asprintf(&url, "%s%s", c->base_url, path) < 0)
        return set_error(c, -ENOMEM, "out of memory");
    CURL *e = c->curl;
    c->errbuf[0] = 0;
    Reply rp = { 0 };
    CURLcode cc = curl_easy_setopt(e, CURLOPT_URL, url);
    if (cc == CURLE_OK)
        cc = curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)c->connect_ms);
    if (cc == CURLE_OK)
        cc = curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)(timeout_ms ? timeout_ms : c->total_ms));
    if (cc == CURLE_OK)
        cc = curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, write_cb);
    if (cc == CURLE_OK)
        cc = curl_easy_setopt(e, CURLOPT_WRITEDATA, &rp);
    if (cc == CURLE_OK && strcmp(method, "POST") == 0) {
        cc = curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, (long)strlen(body ? body : ""));
        if (cc == CURLE_OK)
            cc = curl_easy_setopt(e, CURLOPT_COPYPOSTFIELDS, body ? body : "");
    } else if (cc == CURLE_OK)
        cc = curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
    if (cc != CURLE_OK)
        return set_error(c, -ENOMEM, "agent %s: could not set up the request: %s", c->address,
                         curl_easy_strerror(cc));
    log_debug("agent client: %s %s", method, url);
    cc = curl_easy_perform(e);
    if (cc != CURLE_OK) {
        int r = rp.too_big ? set_error(c, -EPROTO, "agent %s: reply to %s is larger than %d "
                                                   "bytes",
                                       c->address, path, MAX_REPLY)
                           : transport_error(c, cc, path);
        free(rp.data);
        return r;
    }
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, ret_code);
    *ret_reply = rp;
    return 0;
}

static int http_status_errno(long code)
{
    switch (code) {
    case 400: return -EINVAL;
    case 404: return -ENOENT;
    case 409: return -EBUSY;
    case 413: return -E2BIG;
    case 503: return -EAGAIN;
    default: return code >= 500 ? -EIO : -EPROTO;
    }
}

/* A JSON request whose reply is a JSON object: *ret gets it on 2xx; other statuses become
 * errors with the agent's "error" text. */
static int call_json(OrchAgentClient *c, const char *method, const char *path, json_t *body,
                     unsigned timeout_ms, long *ret_code, json_t **ret)
{
    *ret = NULL;
    _cleanup_free_ char *body_s = NULL;
    if (body && !(body_s = json_dumps(body, JSON_COMPACT)))
        return set_error(c, -ENOMEM, "out of memory");
    long code;
    Reply rp;
    int r = request(c, method, path, body_s ? body_s : (body ? NULL : "{}"), timeout_ms, &code,
                    &rp);
    if (ret_code)
        *ret_code = code;
    if (r < 0)
        return r;
    json_error_t err;
    json_t *j = rp.data ? json_loadb(rp.data, rp.len, 0, &err) : NULL;
    free(rp.data);
    if (!json_is_object(j)) {
        json_decref(j);
        if (code >= 400)
            return set_error(c, http_status_errno(code), "agent %s: %s %s: HTTP %ld", c->address,
                             method, path, code);
        return set_error(c, -EPROTO, "agent %s: %s %s: the reply is not a JSON object (HTTP "
                                     "%ld)",
                         c->address, method, path, code);
    }
    if (code >= 200 && code < 300) {
        *ret = j;
        return 0;
    }
    const char *msg = json_string_value(json_object_get(j, "error"));
    r = set_error(c, http_status_errno(code), "agent %s: %s %s: %s (HTTP %ld)", c->address,
                  method, path, msg ? msg : "no error message", code);
    *ret = j; /* the caller may want running_job etc.; it frees it */
    return r;
}

int orch_agent_status(OrchAgentClient *c, json_t **ret)
{
    json_t *j;
    int r = call_json(c, "GET", "/v1/status", NULL, 0, NULL, &j);
    if (r < 0) {
        json_decref(j);
        return r;
    }
    if (!json_is_object(json_object_get(j, "postgres")) || !json_object_get(j, "node")) {
        json_decref(j);
        return set_error(c, -EPROTO, "agent %s: the status reply lacks node or postgres",
                         c->address);
    }
    *ret = j;
    return 0;
}

int orch_agent_start_job(OrchAgentClient *c, const char *kind, json_t *body, char **ret_job_id)
{
    *ret_job_id = NULL;
    const char *path = strcmp(kind, "backup") == 0    ? "/v1/backup"
                       : strcmp(kind, "restore") == 0 ? "/v1/restore"
                                                      : NULL;
    if (!path)
        return set_error(c, -EINVAL, "unknown job kind \"%s\"", kind);
    _cleanup_(json_decrefp) json_t *empty = body ? NULL : json_object();
    json_t *j;
    long code;
    int r = call_json(c, "POST", path, body ? body : empty, 0, &code, &j);
    if (r < 0) {
        const char *running = json_string_value(json_object_get(j, "running_job"));
        if (r == -EBUSY && running)
            set_error(c, r, "agent %s: cannot start a %s: job %s is running", c->address, kind,
                      running);
        json_decref(j);
        return r;
    }
    const char *id = json_string_value(json_object_get(j, "job"));
    if (code != 202 || !id || !*id) {
        json_decref(j);
        return set_error(c, -EPROTO, "agent %s: POST %s: no job id in the reply (HTTP %ld)",
                         c->address, path, code);
    }
    *ret_job_id = strdup(id);
    json_decref(j);
    return *ret_job_id ? 0 : set_error(c, -ENOMEM, "out of memory");
}

int orch_agent_job(OrchAgentClient *c, const char *id, json_t **ret)
{
    *ret = NULL;
    if (!id || !*id || strchr(id, '/') || strchr(id, '?') || strchr(id, '#'))
        return set_error(c, -EINVAL, "bad job id");
    _cleanup_free_ char *path = NULL;
    if (asprintf(&path, "/v1/jobs/%s", id) < 0)
        return set_error(c, -ENOMEM, "out of memory");
    json_t *j;
    int r = call_json(c, "GET", path, NULL, 0, NULL, &j);
    if (r < 0) {
        json_decref(j);
        return r;
    }
    const char *state = json_string_value(json_object_get(j, "state"));
    if (!state || (strcmp(state, "running") != 0 && strcmp(state, "succeeded") != 0 &&
                   strcmp(state, "failed") != 0)) {
        json_decref(j);
        return set_error(c, -EPROTO, "agent %s: job %s has no valid state", c->address, id);
    }
    *ret = j;
    return 0;
}

int orch_agent_poll_job(OrchAgentClient *c, const char *id, double *transient_since,
                        json_t **ret)
{
    *ret = NULL;
    json_t *j;
    int r = orch_agent_job(c, id, &j);
    if (r == -ECONNREFUSED || r == -ETIMEDOUT || r == -ECONNRESET || r == -EAGAIN) {
        /* A restart of the agent loses the job (404 next); a blip does not. */
        double now = mono_now();
        if (*transient_since == 0)
            *transient_since = now;
        return now - *transient_since > ORCH_AGENT_TRANSIENT_MS / 1000.0 ? r : 1;
    }
    if (r < 0)
        return r;
    *transient_since = 0;
    *ret = j;
    const char *state = json_string_value(json_object_get(j, "state"));
    if (strcmp(state, "running") == 0)
        return 1;
    if (strcmp(state, "succeeded") == 0)
        return 0;
    const char *err = json_string_value(json_object_get(j, "error"));
    return set_error(c, -EIO, "agent %s: job %s failed: %s", c->address, id,
                     err ? err : "no error message");
}

int orch_agent_wait_job(OrchAgentClient *c, const char *id, unsigned poll_ms,
                        OrchAgentProgressFn progress, void *userdata, json_t **ret_final)
{
    if (ret_final)
        *ret_final = NULL;
    double transient_since = 0;
    for (;;) {
        json_t *j;
        int r = orch_agent_poll_job(c, id, &transient_since, &j);
        if (j && progress)
            progress(j, userdata);
        if (r != 1) {
            if (ret_final)
                *ret_final = j;
            else
                json_decref(j);
            return r;
        }
        json_decref(j);
        sleep_ms(poll_ms ? poll_ms : 1000);
    }
}

int orch_agent_postgres(OrchAgentClient *c, const char *action, bool *ret_changed)
{
    if (strcmp(action, "stop") != 0 && strcmp(action, "start") != 0)
        return set_error(c, -EINVAL, "unknown PostgreSQL action \"%s\"", action);
    char path[32];
    snprintf(path, sizeof(path), "/v1/postgres/%s", action);
    json_t *j;
    int r = call_json(c, "POST", path, NULL, MAX(c->total_ms, ORCH_AGENT_PG_TIMEOUT_MS), NULL,
                      &j);
    if (r >= 0 && !json_is_true(json_object_get(j, "ok")))
        r = set_error(c, -EPROTO, "agent %s: POST %s: no \"ok\" in the reply", c->address, path);
    if (r >= 0 && ret_changed)
        *ret_changed = json_is_true(json_object_get(j, "changed"));
    json_decref(j);
    return r;
}

int orch_agent_metrics(OrchAgentClient *c, char **ret)
{
    *ret = NULL;
    long code;
    Reply rp;
    int r = request(c, "GET", "/metrics", NULL, 0, &code, &rp);
    if (r < 0)
        return r;
    if (code != 200) {
        free(rp.data);
        return set_error(c, http_status_errno(code), "agent %s: GET /metrics: HTTP %ld",
                         c->address, code);
    }
    *ret = rp.data ? rp.data : strdup("");
    return *ret ? 0 : set_error(c, -ENOMEM, "out of memory");
}
