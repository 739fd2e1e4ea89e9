/*
 * The allocator policy of the programs that back up (pitr-snap, pitr-agent).
 *
 * glibc gives each thread that allocates its own arena, and an arena keeps the memory of its
 * largest moment. A backup's buffers of megabytes (batches, compression groups, payloads) are
 * allocated by one thread and freed by another, so every arena in turn grows to the peak of
 * its own: peak memory crept up for as long as the backup ran (measured on an incompressible
 * stream, 2 worker threads: 37 MB after 0.5 s, 45 MB after 4 s). With one arena it is 44 MB
 * at 0.5 s and stays there, for 200 MB and 2 GB of input alike, at the same speed: the
 * pipeline recycles its large buffers and allocates little per chunk.
 */
#pragma once

/* Call at the start of main(), before any thread exists. */
void malloc_policy_for_backup(void);
