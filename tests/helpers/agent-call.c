/*
 * agent-call --ca F --cert F --key F [--timeout MS] HOST:PORT COMMAND: one call of
 * orchestrator/agent-client.h, for the integration tests. Commands:
 *   status | metrics | backup [LABEL] | restore JSON | job ID | wait ID | stop | start
 * Prints the reply as JSON (metrics: the text) on stdout. On failure prints the client's
 * message on stderr and exits with: 3 TLS refused (-EACCES), 4 agent not reachable
 * (-ECONNREFUSED), 5 busy (-EBUSY), 6 job failed (-EIO from wait; the job is printed),
 * 2 usage, 1 anything else.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "orchestrator/agent-client.h"

static int exit_code(int r)
{
    switch (r) {
    case 0: return 0;
    case -EACCES: return 3;
    case -ECONNREFUSED: return 4;
    case -EBUSY: return 5;
    case -EIO: return 6;
    default: return 1;
    }
}

static void print_json(const json_t *j)
{
    if (j) {
        json_dumpf(j, stdout, JSON_INDENT(2) | JSON_SORT_KEYS);
        putchar('\n');
    }
}

static void print_progress(const json_t *job, void *userdata)
{
    (void)userdata;
    const json_t *p = json_object_get(job, "progress");
    fprintf(stderr, "job %s: %s, %lld bytes done\n",
            json_string_value(json_object_get(job, "id")),
            json_string_value(json_object_get(job, "state")),
            (long long)json_integer_value(json_object_get(p, "bytes_done")));
}

static int usage(void)
{
    fprintf(stderr, "usage: agent-call --ca F --cert F --key F [--timeout MS] HOST:PORT "
                    "status|metrics|backup [LABEL]|restore JSON|job ID|wait ID|stop|start\n");
    return 2;
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        { "ca", required_argument, NULL, 'a' },   { "cert", required_argument, NULL, 'c' },
        { "key", required_argument, NULL, 'k' },  { "timeout", required_argument, NULL, 't' },
        {},
    };
    OrchTlsFiles tls = { 0 };
    unsigned timeout_ms = 0;
    int o;
    while ((o = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (o) {
        case 'a': tls.ca = optarg; break;
        case 'c': tls.cert = optarg; break;
        case 'k': tls.key = optarg; break;
        case 't': timeout_ms = (unsigned)strtoul(optarg, NULL, 10); break;
        default: return usage();
        }
    }
    if (argc - optind < 2)
        return usage();
    const char *address = argv[optind], *cmd = argv[optind + 1];
    const char *arg = argc - optind > 2 ? argv[optind + 2] : NULL;
    _cleanup_(orch_agent_client_freep) OrchAgentClient *c = NULL;
    int r = orch_agent_client_new(address, &tls, &c);
    if (r < 0) {
        fprintf(stderr, "agent-call: bad address or TLS files: %s\n", strerror(-r));
        return 2;
    }
    if (timeout_ms)
        orch_agent_client_set_timeouts(c, 0, timeout_ms);
    json_t *j = NULL;
    if (strcmp(cmd, "status") == 0)
        r = orch_agent_status(c, &j);
    else if (strcmp(cmd, "metrics") == 0) {
        char *text = NULL;
        if ((r = orch_agent_metrics(c, &text)) == 0)
            fputs(text, stdout);
        free(text);
    } else if (strcmp(cmd, "backup") == 0 || strcmp(cmd, "restore") == 0) {
        json_t *body = NULL;
        if (strcmp(cmd, "backup") == 0 && arg)
            body = json_pack("{s:s}", "label", arg);
        else if (strcmp(cmd, "restore") == 0 && arg && !(body = json_loads(arg, 0, NULL)))
            return usage();
        char *id = NULL;
        r = orch_agent_start_job(c, cmd, body, &id);
        json_decref(body);
        if (r == 0)
            j = json_pack("{s:s}", "job", id);
        free(id);
    } else if (strcmp(cmd, "job") == 0 && arg)
        r = orch_agent_job(c, arg, &j);
    else if (strcmp(cmd, "wait") == 0 && arg)
        r = orch_agent_wait_job(c, arg, 200, print_progress, NULL, &j);
    else if (strcmp(cmd, "stop") == 0 || strcmp(cmd, "start") == 0) {
        bool changed = false;
        if ((r = orch_agent_postgres(c, cmd, &changed)) == 0)
            j = json_pack("{s:b,s:b}", "ok", true, "changed", changed);
    } else
        return usage();
    print_json(j);
    json_decref(j);
    if (r < 0)
        fprintf(stderr, "agent-call: %s\n", orch_agent_client_error(c));
    return exit_code(r);
}
