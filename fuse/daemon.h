/*
 * Running mount.pitrfs in the background the way mount(8) expects of a helper: the command
 * returns only once the filesystem is mounted, with exit status 0, or with the error and its
 * exit status (a wrong passphrase is 2) and nothing mounted.
 *
 * The process forks first, before any thread exists and before the repository is opened: the
 * LMDB index must be used only by the process that opened it (its reader table records the
 * pid, and the lock on lock.mdb is not inherited across fork), and OpenSSL and libfuse threads
 * do not survive a fork either. The parent just waits: the child does all the work with the
 * terminal still on stderr (a passphrase prompt works), reports its verdict through a pipe and
 * then detaches. This is fuse_daemonize() turned around so that it can report failure.
 *
 * After detaching, stderr (our log lines and libfuse's) goes to a log file, each line with a
 * UTC timestamp, or, without a log file, to syslog (facility daemon).
 */
#pragma once

/* Fork. Returns in the child only, with the write end of the verdict pipe in *ret_fd; the
 * parent exits with the child's verdict (1 if the child dies without one). -errno if the fork
 * itself fails (then nothing has happened and the caller is still the only process). */
int pfs_daemon_fork(int *ret_fd);
/* Child: the mount failed; make the parent exit with `status`. Closes fd. */
void pfs_daemon_fail(int fd, int status);
/*
 * Child: the mount is up. Start a new session, chdir to /, point stdin/stdout to /dev/null and
 * stderr to the log (log_path, appended, created 0600; syslog when NULL), then tell the parent
 * to exit 0 and close fd. Returns 0, or -errno when the log file cannot be opened (logged on
 * the terminal; nothing was changed and fd is still open, so the caller can unmount and
 * pfs_daemon_fail()). Threads may be started afterwards.
 */
int pfs_daemon_detach(int fd, const char *log_path);
/* Flush and stop the log forwarding (at exit). */
void pfs_daemon_log_close(void);
