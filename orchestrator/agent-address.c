#include "orchestrator/agent-address.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/macro.h"
#include "common/parse.h"

int orch_agent_address_parse(const char *s, OrchAgentAddress *ret)
{
    *ret = (OrchAgentAddress){ 0 };
    const char *host, *port;
    size_t host_len;
    if (!s)
        return -EINVAL;
    for (const char *c = s; *c; c++)
        if ((unsigned char)*c <= ' ' || *c == 0x7f)
            return -EINVAL; /* spaces and control characters, a newline among them */
    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        if (!close || (close[1] != 0 && close[1] != ':'))
            return -EINVAL;
        host = s + 1;
        host_len = (size_t)(close - host);
        port = close[1] ? close + 2 : NULL;
    } else {
        const char *colon = strchr(s, ':');
        if (colon && strchr(colon + 1, ':'))
            return -EINVAL; /* an IPv6 address without its brackets */
        host = s;
        host_len = colon ? (size_t)(colon - s) : strlen(s);
        port = colon ? colon + 1 : NULL;
    }
    if (host_len == 0 || strcspn(host, "/?#@[]") < host_len)
        return -EINVAL;
    unsigned long long p = ORCH_AGENT_DEFAULT_PORT;
    if (port && parse_unsigned(port, 1, 65535, &p) < 0)
        return -EINVAL;
    _cleanup_free_ char *h = strndup(host, host_len);
    if (!h || asprintf(&ret->normalized, memchr(host, ':', host_len) ? "[%s]:%llu" : "%s:%llu",
                       h, p) < 0) {
        ret->normalized = NULL;
        return -ENOMEM;
    }
    ret->host = TAKE_PTR(h);
    ret->port = (uint16_t)p;
    return 0;
}

void orch_agent_address_done(OrchAgentAddress *a)
{
    free(a->host);
    free(a->normalized);
    *a = (OrchAgentAddress){ 0 };
}
