/*
 * An agent's network address as the orchestrator is given it (configuration file, command
 * line): "host", "host:port", "[v6addr]" or "[v6addr]:port". An IPv6 address needs its
 * brackets, since its colons would otherwise be read as a port separator. The port defaults
 * to the agent's own default, so a node that runs `pitr-agent serve` without --listen needs
 * no port in the configuration.
 */
#pragma once

#include <stdint.h>

#include "agent/service.h"

#define ORCH_AGENT_DEFAULT_PORT AGENT_SERVE_DEFAULT_PORT

typedef struct OrchAgentAddress {
    char *host;       /* without brackets */
    uint16_t port;
    char *normalized; /* "host:port", "[v6addr]:port" for an IPv6 host */
} OrchAgentAddress;

/* -EINVAL when `s` is NULL or none of the forms above, holds a space or a control character,
 * has an empty host, a host with '/', '?', '#', '@' or a bracket in it, or a port outside
 * 1..65535; -ENOMEM. */
int orch_agent_address_parse(const char *s, OrchAgentAddress *ret);
void orch_agent_address_done(OrchAgentAddress *a);
