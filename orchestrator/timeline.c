#include "orchestrator/timeline.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "chunkstore/wal-object.h"

/* One ancestor line: "<tli><blanks><lsn>[<blanks><reason>]", as PostgreSQL's
 * readTimeLineHistory reads it. */
static int parse_line(const char *p, const char *eol, OrchTimelineSwitch *ret)
{
    if (!isdigit((unsigned char)*p))
        return -EINVAL;
    char *end;
    errno = 0;
    unsigned long tli = strtoul(p, &end, 10);
    if (errno != 0 || tli == 0 || tli > UINT32_MAX || end >= eol || !isblank((unsigned char)*end))
        return -EINVAL;
    p = end;
    while (p < eol && isblank((unsigned char)*p))
        p++;
    const char *lsn = p;
    while (p < eol && !isblank((unsigned char)*p))
        p++;
    char buf[24];
    if (p == lsn || (size_t)(p - lsn) >= sizeof(buf))
        return -EINVAL;
    memcpy(buf, lsn, (size_t)(p - lsn));
    buf[p - lsn] = 0;
    uint64_t v;
    if (cs_wal_lsn_parse(buf, &v) < 0)
        return -EINVAL;
    *ret = (OrchTimelineSwitch){ .tli = (uint32_t)tli, .end = v };
    return 0;
}

int orch_timeline_history_parse(uint32_t tli, const char *text, OrchTimelineHistory *ret,
                                unsigned *ret_line)
{
    OrchTimelineHistory h = { .tli = tli };
    unsigned line = 0;
    int r = tli == 0 ? -EINVAL : 0;
    for (const char *p = text ? text : ""; r == 0 && *p;) {
        const char *eol = strchrnul(p, '\n');
        line++;
        while (p < eol && isspace((unsigned char)*p))
            p++;
        if (p < eol && *p != '#') {
            OrchTimelineSwitch s;
            r = parse_line(p, eol, &s);
            /* Ancestors in order, each older than the timeline the file belongs to, and a
             * child never begins before its parent did. */
            const OrchTimelineSwitch *prev = h.n_ancestors ? &h.ancestors[h.n_ancestors - 1]
                                                           : NULL;
            if (r == 0 && (s.tli >= tli || (prev && (s.tli <= prev->tli || s.end < prev->end))))
                r = -EINVAL;
            if (r == 0) {
                OrchTimelineSwitch *v = reallocarray(h.ancestors, h.n_ancestors + 1, sizeof(*v));
                if (!v)
                    r = -ENOMEM;
                else {
                    h.ancestors = v;
                    h.ancestors[h.n_ancestors++] = s;
                }
            }
        }
        p = *eol ? eol + 1 : eol;
    }
    if (r < 0) {
        if (ret_line)
            *ret_line = line;
        orch_timeline_history_done(&h);
        return r;
    }
    *ret = h;
    return 0;
}

void orch_timeline_history_done(OrchTimelineHistory *h)
{
    if (!h)
        return;
    free(h->ancestors);
    *h = (OrchTimelineHistory){ 0 };
}

bool orch_timeline_history_find(const OrchTimelineHistory *h, uint32_t tli, uint64_t *ret_end)
{
    uint64_t end = UINT64_MAX;
    bool found = tli == h->tli;
    for (size_t i = 0; !found && i < h->n_ancestors; i++)
        if (h->ancestors[i].tli == tli) {
            end = h->ancestors[i].end;
            found = true;
        }
    if (found && ret_end)
        *ret_end = end;
    return found;
}

bool orch_timeline_history_has_backup(const OrchTimelineHistory *h, uint32_t tli,
                                      uint64_t start_lsn, uint64_t stop_lsn)
{
    uint64_t end;
    return orch_timeline_history_find(h, tli, &end) && start_lsn < end && stop_lsn <= end;
}
