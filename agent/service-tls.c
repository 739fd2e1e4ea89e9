#include "agent/service-tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <openssl/err.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "agent/log-limit.h"
#include "common/log.h"
#include "common/macro.h"
#include "common/time-util.h"

/* What the refusal log line needs to know about one connection. */
typedef struct TlsConn {
    bool logged;
    char reason[384]; /* set by the verify callback on the first failure */
} TlsConn;

static int conn_index = -1;
static pthread_once_t conn_index_once = PTHREAD_ONCE_INIT;

static void conn_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
    (void)parent, (void)ad, (void)idx, (void)argl, (void)argp;
    free(ptr);
}

static void conn_index_init(void)
{
    conn_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, conn_free);
}

static const char *openssl_error(char *buf, size_t n)
{
    unsigned long e = ERR_peek_last_error();
    if (!e)
        snprintf(buf, n, "unknown error");
    else
        ERR_error_string_n(e, buf, n);
    ERR_clear_error();
    return buf;
}

const char *agent_tls_peer_address(int fd, char *buf, size_t n)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    char host[INET6_ADDRSTRLEN];
    snprintf(buf, n, "?");
    if (fd < 0 || getpeername(fd, (struct sockaddr *)&ss, &len) < 0)
        return buf;
    if (ss.ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)&ss;
        if (inet_ntop(AF_INET, &a->sin_addr, host, sizeof(host)))
            snprintf(buf, n, "%s:%u", host, ntohs(a->sin_port));
    } else if (ss.ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)&ss;
        if (inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof(host)))
            snprintf(buf, n, "[%s]:%u", host, ntohs(a->sin6_port));
    }
    return buf;
}

static void name_oneline(const X509_NAME *name, char *buf, size_t n)
{
    buf[0] = 0;
    BIO *b = BIO_new(BIO_s_mem());
    if (!b)
        return;
    if (X509_NAME_print_ex(b, name, 0, XN_FLAG_RFC2253) >= 0) {
        int got = BIO_read(b, buf, (int)n - 1);
        buf[got > 0 ? got : 0] = 0;
    }
    BIO_free(b);
}

const char *agent_tls_peer_subject(const SSL *ssl, char *buf, size_t n)
{
    X509 *peer = SSL_get0_peer_certificate(ssl);
    snprintf(buf, n, "-");
    if (peer)
        name_oneline(X509_get_subject_name(peer), buf, n);
    return buf;
}

/* OpenSSL does the verification; this only remembers why it failed, for the log line. */
static int verify_cb(int ok, X509_STORE_CTX *store)
{
    if (ok)
        return ok;
    SSL *ssl = X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx());
    TlsConn *c = ssl ? SSL_get_ex_data(ssl, conn_index) : NULL;
    if (c && !c->reason[0]) {
        char subject[256] = "";
        X509 *cert = X509_STORE_CTX_get_current_cert(store);
        if (cert)
            name_oneline(X509_get_subject_name(cert), subject, sizeof(subject));
        int err = X509_STORE_CTX_get_error(store);
        snprintf(c->reason, sizeof(c->reason), "%s (certificate \"%s\")",
                 X509_verify_cert_error_string(err), subject);
    }
    return ok;
}

/* Anyone who can connect can make the agent refuse a handshake: a flood of them must not
 * become a flood of log lines. Loop thread only, like the callback that uses it. */
static AgentLogLimit refusal_log = AGENT_LOG_LIMIT_INIT(2, 20);

static void info_cb(const SSL *ssl, int where, int ret)
{
    if (!(where & SSL_CB_ALERT) || (ret >> 8) != SSL3_AL_FATAL)
        return;
    TlsConn *c = SSL_get_ex_data(ssl, conn_index);
    if (!c || c->logged)
        return;
    c->logged = true;
    uint64_t held_back;
    if (!agent_log_limit_pass(&refusal_log, mono_now(), &held_back))
        return;
    char suppressed[64] = "";
    if (held_back)
        snprintf(suppressed, sizeof(suppressed), " (%" PRIu64 " similar messages suppressed)",
                 held_back);
    char peer[INET6_ADDRSTRLEN + 16];
    agent_tls_peer_address(SSL_get_fd(ssl), peer, sizeof(peer));
    if (where & SSL_CB_READ) {
        log_warning("TLS handshake with %s failed: the client sent alert \"%s\" (does it trust "
                    "this agent's certificate and CA?)%s",
                    peer, SSL_alert_desc_string_long(ret), suppressed);
        return;
    }
    const char *reason = c->reason;
    char buf[256];
    if (!reason[0]) {
        unsigned long e = ERR_peek_last_error();
        const char *s = e ? ERR_reason_error_string(e) : NULL;
        if (s && strstr(s, "did not return a certificate"))
            s = "no client certificate";
        snprintf(buf, sizeof(buf), "%s", s ? s : SSL_alert_desc_string_long(ret));
        reason = buf;
    }
    log_warning("refused TLS connection from %s: %s%s", peer, reason, suppressed);
}

SSL *agent_tls_ssl_new(SSL_CTX *ctx)
{
    SSL *ssl = SSL_new(ctx);
    TlsConn *c = calloc(1, sizeof(*c));
    if (!ssl || !c || !SSL_set_ex_data(ssl, conn_index, c)) {
        free(c);
        SSL_free(ssl);
        return NULL;
    }
    return ssl;
}

void agent_tls_conn_closing(SSL *ssl)
{
    TlsConn *c = SSL_get_ex_data(ssl, conn_index);
    if (c)
        c->logged = true;
}

/* Say "cannot be read" with the errno before OpenSSL says "no start line". */
static int check_readable(const char *what, const char *path)
{
    if (!path)
        return log_error_errno(-EINVAL, "no %s given\nHINT: serve needs --tls-cert, --tls-key "
                                        "and --tls-ca",
                               what);
    FILE *f = fopen(path, "re");
    if (!f)
        return log_error_errno(-errno, "could not read the %s \"%s\": %m", what, path);
    fclose(f);
    return 0;
}

static void check_expiry(SSL_CTX *ctx, const char *path)
{
    X509 *x = SSL_CTX_get0_certificate(ctx);
    if (!x)
        return;
    const ASN1_TIME *not_after = X509_get0_notAfter(x);
    int day, sec;
    if (!ASN1_TIME_diff(&day, &sec, NULL, not_after))
        return;
    if (day < 0 || (day == 0 && sec < 0))
        log_warning("the TLS certificate \"%s\" has expired: clients will refuse this agent", path);
    else if (day < 30)
        log_warning("the TLS certificate \"%s\" expires in %d days", path, day);
    if (X509_cmp_current_time(X509_get0_notBefore(x)) > 0)
        log_warning("the TLS certificate \"%s\" is not valid yet", path);
}

int agent_tls_server_ctx(const char *cert, const char *key, const char *ca, SSL_CTX **ret)
{
    int r;
    if ((r = check_readable("TLS certificate", cert)) < 0 ||
        (r = check_readable("TLS key", key)) < 0 ||
        (r = check_readable("TLS CA certificate", ca)) < 0)
        return r;
    pthread_once(&conn_index_once, conn_index_init);
    if (conn_index < 0)
        return -ENOMEM;
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx)
        return -ENOMEM;
    char err[256];
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE |
                                     SSL_OP_NO_COMPRESSION);
    /* Resumed sessions with client certificates need a context id, else OpenSSL fails them. */
    static const unsigned char sid_ctx[] = "pitr-agent";
    SSL_CTX_set_session_id_context(ctx, sid_ctx, sizeof(sid_ctx) - 1);
    if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
        r = log_error_errno(-EINVAL, "could not load the TLS certificate \"%s\": %s", cert,
                            openssl_error(err, sizeof(err)));
        goto fail;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
        /* OpenSSL compares the key with the certificate as it loads it. */
        if (ERR_GET_REASON(ERR_peek_last_error()) == X509_R_KEY_VALUES_MISMATCH)
            r = log_error_errno(-EINVAL, "the TLS key \"%s\" does not belong to the "
                                         "certificate \"%s\"",
                                key, cert);
        else
            r = log_error_errno(-EINVAL, "could not load the TLS key \"%s\": %s", key,
                                openssl_error(err, sizeof(err)));
        ERR_clear_error();
        goto fail;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        r = log_error_errno(-EINVAL, "the TLS key \"%s\" does not belong to the certificate "
                                     "\"%s\": %s",
                            key, cert, openssl_error(err, sizeof(err)));
        goto fail;
    }
    STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(ca);
    if (SSL_CTX_load_verify_locations(ctx, ca, NULL) != 1 || !names) {
        sk_X509_NAME_pop_free(names, X509_NAME_free);
        r = log_error_errno(-EINVAL, "could not load the TLS CA certificates \"%s\": %s", ca,
                            openssl_error(err, sizeof(err)));
        goto fail;
    }
    /* Sent in the certificate request, so a client with several certificates picks ours. */
    SSL_CTX_set_client_CA_list(ctx, names);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, verify_cb);
    SSL_CTX_set_info_callback(ctx, info_cb);
    check_expiry(ctx, cert);
    *ret = ctx;
    return 0;
fail:
    SSL_CTX_free(ctx);
    return r;
}
