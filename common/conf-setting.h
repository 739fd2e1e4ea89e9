/*
 * Settings lines for PostgreSQL's configuration files (postgresql.auto.conf), written the way
 * PostgreSQL's own ALTER SYSTEM writes them, so that any value reads back as it was given.
 */
#pragma once

#include "common/buf.h"

/* Append "key = 'value'\n"; single quotes in value are doubled. 0 or -ENOMEM. */
int conf_append_setting(Buf *out, const char *key, const char *value);
