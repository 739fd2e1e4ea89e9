/*
 * The orchestrator's client of the node agent service (agent/service.h): HTTPS with a client
 * certificate, the peer verified against the cluster CA and the host name (or IP address) the
 * configuration gives, so the agent's certificate must carry it in its subjectAltName.
 *
 * One OrchAgentClient per agent; it keeps its connection between calls and is not
 * thread-safe (one thread at a time; parallel calls to many agents use one client each).
 * Nothing is printed: a failed call returns -errno and leaves a one-line message, naming the
 * agent, in orch_agent_client_error():
 *   -ECONNREFUSED  the agent cannot be reached (refused, no route, name not resolved, connect
 *                  timeout)
 *   -EACCES        TLS failed: the agent's certificate does not verify or does not match the
 *                  host, or the agent refused our certificate (curl's message is included)
 *   -ETIMEDOUT     connected, but no complete reply within the call's timeout
 *   -EBUSY         409: another operation runs on the agent (see running_job in the reply)
 *   -EINVAL        400: the agent refused the request's parameters
 *   -ENOENT        404: no such job (or endpoint)
 *   -EAGAIN        503: the agent is shutting down or overloaded
 *   -EIO           a job failed (its error in the message), a pg_ctl operation failed, or
 *                  another 5xx
 *   -EPROTO        the reply is not what the protocol says (not JSON, missing fields, too big)
 *   -ENOMEM
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "common/macro.h"
#include "orchestrator/agent-address.h"


typedef struct OrchTlsFiles {
    const char *ca;   /* cluster CA (PEM): verifies the agents */
    const char *cert; /* the orchestrator's client certificate (PEM) */
    const char *key;  /* its key */
} OrchTlsFiles;

typedef struct OrchAgentClient OrchAgentClient;

#define ORCH_AGENT_CONNECT_TIMEOUT_MS 5000
#define ORCH_AGENT_CALL_TIMEOUT_MS    30000
/* pg_ctl start/stop wait for the server (60 s by default on the agent) */
#define ORCH_AGENT_PG_TIMEOUT_MS      150000
/* how long a job's agent may be unreachable (a network blip) before the job counts as lost */
#define ORCH_AGENT_TRANSIENT_MS       5000

/* A client for the agent at `address` (see orchestrator/agent-address.h). The TLS files are
 * copied by name and read at each connection.
 * Returns 0, -EINVAL (bad address, TLS file missing from tls), or -ENOMEM. */
int orch_agent_client_new(const char *address, const OrchTlsFiles *tls, OrchAgentClient **ret);
OrchAgentClient *orch_agent_client_free(OrchAgentClient *c);
DEFINE_CLEANUP_FUNC(OrchAgentClient *, orch_agent_client_free)

/* 0 keeps the default. The total timeout applies to each call (a poll of a job, not the job). */
void orch_agent_client_set_timeouts(OrchAgentClient *c, unsigned connect_ms, unsigned total_ms);
/* The message of the last failed call ("" if none). Valid until the next call. */
const char *orch_agent_client_error(const OrchAgentClient *c);
/* "host:port" as normalized. */
const char *orch_agent_client_address(const OrchAgentClient *c);

/* GET /v1/status: *ret gets the reply object (new reference). */
int orch_agent_status(OrchAgentClient *c, json_t **ret);

/* POST /v1/backup or /v1/restore (kind "backup" or "restore") with `body` (NULL: {}); the new
 * job's id in *ret_job_id (free it). -EBUSY when a job is already running. */
int orch_agent_start_job(OrchAgentClient *c, const char *kind, json_t *body, char **ret_job_id);

/* GET /v1/jobs/ID: the job object. A failed job is not an error here. */
int orch_agent_job(OrchAgentClient *c, const char *id, json_t **ret);

/* One poll of a job, for callers that watch several at once. Returns 1 while the job runs,
 * 0 when it succeeded, -EIO when it failed (with its error), or the error of the poll. A
 * transient error (connection refused or reset, timeout, HTTP 503) returns 1 with *ret NULL
 * until such errors have lasted ORCH_AGENT_TRANSIENT_MS without a good reply between them;
 * *transient_since keeps when they began (start it at 0, one per job). *ret gets the job
 * object when one was read (new reference). */
int orch_agent_poll_job(OrchAgentClient *c, const char *id, double *transient_since,
                        json_t **ret);

typedef void (*OrchAgentProgressFn)(const json_t *job, void *userdata);

/* Poll the job every poll_ms (0: 1000) until it is no longer running, calling progress (if
 * not NULL) with each state seen. *ret_final (if not NULL) gets the last job object whatever
 * the outcome, when there is one. Returns 0 when the job succeeded, -EIO when it failed (with
 * its error), or the error of a poll (transient ones are tolerated as by orch_agent_poll_job). */
int orch_agent_wait_job(OrchAgentClient *c, const char *id, unsigned poll_ms,
                        OrchAgentProgressFn progress, void *userdata, json_t **ret_final);

/* POST /v1/postgres/stop or /v1/postgres/start (action "stop" or "start"), synchronous.
 * *ret_changed (if not NULL) says whether the server's state changed. -EIO with pg_ctl's
 * output when it failed. */
int orch_agent_postgres(OrchAgentClient *c, const char *action, bool *ret_changed);

/* GET /metrics: the Prometheus text in *ret (free it). */
int orch_agent_metrics(OrchAgentClient *c, char **ret);
