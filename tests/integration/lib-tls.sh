# TLS material for the agent service tests, made with the openssl CLI (EC P-256: fast).
# Source it after lib.sh, then `make_pki DIR` writes into DIR:
#   ca.crt ca.key                 the cluster CA
#   server.crt server.key         the agent: SAN IP 127.0.0.1 and DNS localhost, serverAuth
#   client.crt client.key         the orchestrator, signed by the cluster CA, clientAuth
#   other-ca.crt                  another CA, and
#   other.crt other.key           a client certificate it signed
#   selfsigned.crt selfsigned.key a self-signed client certificate
#   expired.crt expired.key       a client certificate of the cluster CA that expired in 2020
# OpenSSL 3.0's x509 and req cannot set dates in the past (-not_before/-not_after came in
# 3.4), so the expired certificate goes through `openssl ca` with -startdate/-enddate.

make_pki() {
    local d=$1
    mkdir -p "$d"
    (
        set -euo pipefail
        cd "$d"
        cat >ext.cnf <<'EOF'
[req]
distinguished_name = dn
prompt = no
[dn]
[ca_ext]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[server_ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[client_ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[ca]
default_ca = expired_ca
[expired_ca]
database = ca-db/index.txt
new_certs_dir = ca-db
serial = ca-db/serial
default_md = sha256
policy = any
copy_extensions = none
unique_subject = no
[any]
commonName = supplied
EOF
        key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }
        # new_ca NAME CN
        new_ca() {
            key "$1.key"
            openssl req -new -x509 -config ext.cnf -extensions ca_ext -key "$1.key" -days 30 \
                -subj "/CN=$2" -out "$1.crt"
        }
        # signed NAME CN CA EXTENSIONS
        signed() {
            key "$1.key"
            openssl req -new -config ext.cnf -key "$1.key" -subj "/CN=$2" -out "$1.csr"
            openssl x509 -req -in "$1.csr" -CA "$3.crt" -CAkey "$3.key" -CAcreateserial -days 30 \
                -extfile ext.cnf -extensions "$4" -out "$1.crt" 2>/dev/null
        }
        new_ca ca "pitr test cluster CA"
        new_ca other-ca "some other CA"
        signed server "pitr-agent test" ca server_ext
        signed client "pitr orchestrator" ca client_ext
        signed other "orchestrator of another cluster" other-ca client_ext
        key selfsigned.key
        openssl req -new -x509 -config ext.cnf -extensions client_ext -key selfsigned.key \
            -days 30 -subj "/CN=self-signed client" -out selfsigned.crt 2>/dev/null
        key expired.key
        openssl req -new -config ext.cnf -key expired.key -subj "/CN=expired client" -out expired.csr
        mkdir -p ca-db
        : >ca-db/index.txt
        echo 01 >ca-db/serial
        openssl ca -batch -config ext.cnf -cert ca.crt -keyfile ca.key -in expired.csr \
            -out expired.crt -notext -extfile ext.cnf -extensions client_ext \
            -startdate 20200101000000Z -enddate 20200201000000Z 2>/dev/null
        chmod 600 ./*.key
    ) || fail "could not make the test PKI in $d"
    # The assertions below are what the tests rely on: check them once here.
    openssl verify -CAfile "$d/ca.crt" "$d/server.crt" "$d/client.crt" >/dev/null ||
        fail "test PKI: server or client certificate does not verify"
    ! openssl verify -CAfile "$d/ca.crt" "$d/expired.crt" >/dev/null 2>&1 ||
        fail "test PKI: the expired certificate verifies"
    openssl x509 -in "$d/expired.crt" -noout -checkend 0 >/dev/null 2>&1 &&
        fail "test PKI: expired.crt has not expired"
    return 0
}
