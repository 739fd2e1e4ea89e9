/*
 * Where the key to a repository comes from, in the order every program uses: a key file,
 * a passphrase file, $PITR_KEY_FILE, $PITR_PASSPHRASE, then a no-echo prompt on the
 * controlling terminal.
 */
#pragma once

#include <stdbool.h>

#include "chunkstore/repo.h"

/* Fill *ret from the first source available. keyfile and passphrase_file may be NULL. With
 * `confirm` a prompted passphrase is asked twice. Returns 0, -EKEYREJECTED when there is no
 * usable source (logged, with a hint), or another -errno. Free with cs_key_source_clear(). */
int cs_key_source_resolve(const char *passphrase_file, const char *keyfile, bool confirm,
                          CsKeySource *ret);
/* Wipe and free the passphrase held by ks. */
void cs_key_source_clear(CsKeySource *ks);

/* Open the repository at `location` with the key from the sources above (never confirming a
 * prompt). Says "not a repository" (-ENOMEDIUM) before asking for any passphrase. */
int cs_repo_unlock(const char *location, const char *passphrase_file, const char *keyfile,
                   const CsOpenParams *params, CsRepo **ret);
