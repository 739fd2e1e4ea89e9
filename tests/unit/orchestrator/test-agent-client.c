/*
 * The agent client's job polling when the agent cannot be reached: a port that refuses
 * connections (a bound socket that does not listen) stands for an agent restarting or a
 * network blip. The poll keeps the job alive for ORCH_AGENT_TRANSIENT_MS, then gives up.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/macro.h"
#include "common/time-util.h"
#include "orchestrator/agent-client.h"
#include "tests/unit/harness.h"

/* A loopback port that refuses connections for as long as *ret_fd stays open. */
static uint16_t refusing_port(int *ret_fd)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t n = sizeof(a);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &n), 0);
    *ret_fd = fd;
    return ntohs(a.sin_port);
}

static void test_unreachable_agent(void **state)
{
    (void)state;
    int fd;
    char address[32];
    snprintf(address, sizeof(address), "127.0.0.1:%u", refusing_port(&fd));
    /* The TLS files are read at connection time, after the TCP connect that is refused. */
    OrchTlsFiles tls = { .ca = "/nonexistent/ca.pem", .cert = "/nonexistent/c.pem",
                         .key = "/nonexistent/c.key" };
    OrchAgentClient *c;
    ASSERT_ERR(EINVAL, orch_agent_client_new(NULL, &tls, &c));
    ASSERT_ERR(EINVAL, orch_agent_client_new("::1", &tls, &c)); /* brackets needed */
    ASSERT_OK(orch_agent_client_new(address, &tls, &c));

    double since = 0;
    json_t *j = (json_t *)1;
    assert_int_equal(orch_agent_poll_job(c, "0123456789abcdef", &since, &j), 1);
    assert_null(j);
    assert_true(since > 0);
    double first = since;
    assert_int_equal(orch_agent_poll_job(c, "0123456789abcdef", &since, &j), 1);
    assert_true(since == first); /* the same series of errors */

    /* The same series, ORCH_AGENT_TRANSIENT_MS and more later: the job is lost. */
    since = mono_now() - ORCH_AGENT_TRANSIENT_MS / 1000.0 - 1;
    assert_int_equal(orch_agent_poll_job(c, "0123456789abcdef", &since, &j), -ECONNREFUSED);
    assert_null(j);
    assert_non_null(strstr(orch_agent_client_error(c), "not reachable"));

    /* A bad job id is no network error: it fails at once. */
    since = 0;
    assert_int_equal(orch_agent_poll_job(c, "../x", &since, &j), -EINVAL);
    assert_true(since == 0);

    orch_agent_client_free(c);
    close(fd);
}

RUN_TESTS(cmocka_unit_test(test_unreachable_agent))
