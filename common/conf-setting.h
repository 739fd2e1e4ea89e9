/*
 * Settings lines for PostgreSQL's configuration files (postgresql.auto.conf), written the way
 * PostgreSQL's own ALTER SYSTEM writes them, so that any value reads back as it was given.
 */
#pragma once

#include <stddef.h>

#include "common/buf.h"

/* Append "key = 'value'\n"; single quotes and backslashes in value are doubled, as ALTER
 * SYSTEM does (the configuration parser reads a backslash as an escape). 0 or -ENOMEM. */
int conf_append_setting(Buf *out, const char *key, const char *value);

/*
 * Append the configuration text (n bytes) with "# " before every line that sets
 * restore_command or a recovery_target setting, and a newline after a last line without
 * one. A data directory keeps the recovery settings of the restore that made it, and its
 * base backups copy them: left in force beside new ones they can name a second target
 * ("multiple recovery targets specified"), keep an old one for a restore to the end of the
 * archive, or pin an old timeline. 0 or -ENOMEM.
 */
int conf_append_without_recovery(Buf *out, const char *text, size_t n);
