/*
 * dovecot_support.c - Dovecot-made Maildirs for integration tests
 * (dovecot_support.h).
 */
#define _GNU_SOURCE /* unshare, CLONE_NEWUSER */

#include "dovecot_support.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent_run_support.h" /* ars_wait */

#define DVS_RUN_MS 60000

static bool
find_bin(char *out, size_t size)
{
    const char *path = getenv("PATH");
    const char *p = path != NULL ? path : "";

    while (*p != '\0') {
        const char *end = strchr(p, ':');
        size_t len = end != NULL ? (size_t)(end - p) : strlen(p);
        int w = snprintf(out, size, "%.*s/doveadm", (int)len, p);

        if (len > 0 && p[0] == '/' && w > 0 && (size_t)w < size &&
            access(out, X_OK) == 0) {
            return true;
        }
        p += len + (end != NULL ? 1 : 0);
    }
    snprintf(out, size, "/usr/bin/doveadm");
    return access(out, X_OK) == 0;
}

bool
dvs_available(void)
{
    char b[DVS_PATH_MAX];
    return find_bin(b, sizeof(b));
}

int
dvs_init(struct dvs *d, const char *dir, const char *maildir)
{
    FILE *f;

    memset(d, 0, sizeof(*d));
    if (!find_bin(d->bin, sizeof(d->bin)) ||
        (size_t)snprintf(d->dir, sizeof(d->dir), "%s", dir) >= sizeof(d->dir) ||
        (size_t)snprintf(d->conf, sizeof(d->conf), "%s/dovecot.conf", dir) >=
            sizeof(d->conf) ||
        (size_t)snprintf(d->maildir, sizeof(d->maildir), "%s", maildir) >=
            sizeof(d->maildir)) {
        return -1;
    }
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        return -1;
    }
    f = fopen(d->conf, "w");
    if (f == NULL) {
        return -1;
    }
    fprintf(f,
            "base_dir = %s/run\nstate_dir = %s/state\n"
            "log_path = /dev/stderr\ninfo_log_path = /dev/null\n"
            "ssl = no\nfirst_valid_uid = 1\nfirst_valid_gid = 0\n"
            "mail_location = maildir:%s\n",
            dir, dir, maildir);
    return fclose(f) == 0 ? 0 : -1;
}

static void
put_map(const char *path, const char *s)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd >= 0) {
        (void)!write(fd, s, strlen(s));
        close(fd);
    }
}

int
dvs_run(const struct dvs *d, const char *const *args, const char *stdin_path)
{
    char outp[DVS_PATH_MAX + 16], errp[DVS_PATH_MAX + 16];
    char uid_map[64], gid_map[64], home[DVS_PATH_MAX + 8];
    char *argv[32];
    size_t n = 0;
    pid_t pid;

    argv[n++] = (char *)d->bin;
    argv[n++] = (char *)"-c";
    argv[n++] = (char *)d->conf;
    for (size_t i = 0; args[i] != NULL; i++) {
        if (n + 1 >= sizeof(argv) / sizeof(*argv)) {
            return -1;
        }
        argv[n++] = (char *)args[i];
    }
    argv[n] = NULL;
    snprintf(outp, sizeof(outp), "%s/doveadm.out", d->dir);
    snprintf(errp, sizeof(errp), "%s/doveadm.err", d->dir);
    snprintf(uid_map, sizeof(uid_map), "1000 %u 1\n", (unsigned)geteuid());
    snprintf(gid_map, sizeof(gid_map), "1000 %u 1\n", (unsigned)getegid());
    snprintf(home, sizeof(home), "HOME=%s", d->dir);
    pid = fork();
    if (pid < 0) {
        return -1;
    }
    if (pid == 0) {
        char *envp[] = {home, (char *)"USER=coffer",
                        (char *)"PATH=/usr/bin:/bin:/usr/sbin:/sbin", NULL};
        int in = open(stdin_path != NULL ? stdin_path : "/dev/null", O_RDONLY);
        int o = open(outp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        int e = open(errp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (in < 0 || o < 0 || e < 0 || dup2(in, 0) < 0 || dup2(o, 1) < 0 ||
            dup2(e, 2) < 0) {
            _exit(127);
        }
        if (geteuid() == 0) {
            if (unshare(CLONE_NEWUSER) != 0) {
                _exit(126);
            }
            put_map("/proc/self/setgroups", "deny");
            put_map("/proc/self/uid_map", uid_map);
            put_map("/proc/self/gid_map", gid_map);
        }
        execve(argv[0], argv, envp);
        _exit(127);
    }
    /* Killed by a signal is no exit code (ars_wait: 128 + the signal). */
    int code = ars_wait(pid, DVS_RUN_MS);
    return code >= 128 ? -1 : code;
}

int
dvs_save(const struct dvs *d, const char *mailbox, const char *text)
{
    char p[DVS_PATH_MAX + 16];
    FILE *f;
    const char *args[] = {"save", "-m", mailbox, NULL};

    snprintf(p, sizeof(p), "%s/msg.eml", d->dir);
    f = fopen(p, "w");
    if (f == NULL || fputs(text, f) < 0) {
        if (f != NULL) {
            fclose(f);
        }
        return -1;
    }
    if (fclose(f) != 0) {
        return -1;
    }
    return dvs_run(d, args, p) == 0 ? 0 : -1;
}
