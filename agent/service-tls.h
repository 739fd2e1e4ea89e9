/*
 * The server half of the agent service's mutual TLS: TLS 1.2 or later, the agent's certificate
 * and key, and a client certificate that the cluster CA signed, required at the handshake.
 *
 * Every connection refused at the handshake is logged once, as a warning, with the peer's
 * address and the reason: the certificate verification error (X509_verify_cert_error_string:
 * "self-signed certificate", "certificate has expired", "unable to get local issuer
 * certificate") and the subject of the certificate at fault, or OpenSSL's reason when there
 * was no certificate or no common protocol. A client that gives up because it does not trust
 * the agent's certificate is logged the same way, with the alert it sent. Beyond 20 such lines
 * at once and 2 a second, lines are held back and the next one says how many were.
 */
#pragma once

#include <openssl/ssl.h>

/* Build the server context from PEM files: `cert` (the agent's certificate, followed by any
 * intermediates), `key`, `ca` (the CA certificates that client certificates must chain to).
 * Each problem is logged with the file name: -ENOENT / -EACCES (cannot be read), -EINVAL (not
 * PEM, no certificate, key does not match the certificate). A certificate that has expired or
 * expires within 30 days is only warned about. */
int agent_tls_server_ctx(const char *cert, const char *key, const char *ca, SSL_CTX **ret);

/* A new server-side connection object of `ctx` with the bookkeeping the refusal log needs.
 * NULL on allocation failure. */
SSL *agent_tls_ssl_new(SSL_CTX *ctx);

/* The agent closes this connection itself before its handshake ended (agent/service-conn.h):
 * its failing handshake is not a refusal, and is not logged as one. */
void agent_tls_conn_closing(SSL *ssl);

/* "CN=...,O=..." of the verified client certificate of an established connection, into buf;
 * "-" when there is none. */
const char *agent_tls_peer_subject(const SSL *ssl, char *buf, size_t n);

/* "ADDR:PORT" ("[ADDR]:PORT" for IPv6) of the socket's peer, into buf; "?" when unknown. */
const char *agent_tls_peer_address(int fd, char *buf, size_t n);
