/*
 * Timeline histories: which base backups a node can be recovered from on the timeline it is on.
 *
 * When a server promotes to a new timeline it writes "pg_wal/<TLI>.history" (TLI in 8 hex
 * digits): one line per ancestor timeline, oldest first, "<tli>\t<switch LSN>\t<reason>", the
 * switch LSN being where that timeline ends and its child begins. Blank lines and lines starting
 * with '#' are comments. Timeline 1 has no history file.
 *
 * A base backup taken on timeline T, from its start LSN to its stop LSN, can be recovered along
 * timeline C when T is C, or when T is an ancestor of C and the backup started and ended on T
 * before it switched (start < switch, stop <= switch): only then is the WAL the backup needs
 * the same on T as on the way to C. A backup from a timeline C does not descend from (an
 * abandoned one, after a restore to an earlier point), or from after the switch, is not on
 * C's history, however new.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct OrchTimelineSwitch {
    uint32_t tli;    /* an ancestor timeline */
    uint64_t end;    /* its switch LSN: its last byte is before this */
} OrchTimelineSwitch;

typedef struct OrchTimelineHistory {
    uint32_t tli;                  /* the current timeline */
    OrchTimelineSwitch *ancestors; /* oldest first */
    size_t n_ancestors;
} OrchTimelineHistory;

/* Parses the history file `text` of timeline `tli` (NULL or "" for a timeline without one,
 * such as 1). Returns 0, -EINVAL when a line does not parse, or when timelines do not increase
 * and stay below tli or switch points go backwards (the line is named in *ret_line, from 1,
 * when ret_line is not NULL), or -ENOMEM. */
int orch_timeline_history_parse(uint32_t tli, const char *text, OrchTimelineHistory *ret,
                                unsigned *ret_line);
void orch_timeline_history_done(OrchTimelineHistory *h);

/* Whether timeline `tli` is h's timeline or one of its ancestors; if so, *ret_end gets where it
 * ends in h's history (UINT64_MAX for h's own timeline), when ret_end is not NULL. */
bool orch_timeline_history_find(const OrchTimelineHistory *h, uint32_t tli, uint64_t *ret_end);

/* Whether a base backup of timeline `tli` from start_lsn to stop_lsn (0: not known; then the
 * start alone is checked) can be recovered along h's timeline. */
bool orch_timeline_history_has_backup(const OrchTimelineHistory *h, uint32_t tli,
                                      uint64_t start_lsn, uint64_t stop_lsn);
