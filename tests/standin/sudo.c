/*
 * sudo for the Tiny Core 11 STAND-IN only (tests/standin); not a general sudo.
 *
 * Tiny Core gives its user passwordless sudo ("tc ALL=NOPASSWD: ALL") and tce-load relies
 * on it. busybox has no sudo, so the stand-in carries this: setuid root, statically linked
 * (the stand-in's /lib holds glibc, but a static binary cannot be broken by it), and it
 * allows root and members of group staff (gid 50, Tiny Core's group for its user).
 *
 *   sudo [-E] [-H] [-n] [-S] [-u USER] [--] COMMAND [ARG...]
 *   sudo [-E] [-u USER] -s            (a shell)
 *
 * There is no sudoers file and never a password prompt (-S and -n are accepted for scripts
 * written for the real sudo). Without -E the environment is reset to a small safe set with
 * a fixed PATH, as the real sudo's env_reset does. /etc/passwd and /etc/group are parsed by
 * hand because getpwnam() in a static glibc binary needs the NSS modules at run time.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define STAFF_GID 50
#define MAX_GROUPS 64
#define SAFE_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

struct account {
    char name[64];
    uid_t uid;
    gid_t gid;
    char home[256];
    char shell[256];
};

static void die(const char *msg)
{
    fprintf(stderr, "sudo: %s\n", msg);
    exit(1);
}

/* Fields of one colon-separated line; returns how many were found. */
static int split(char *line, char **fields, int max)
{
    int n = 0;
    line[strcspn(line, "\n")] = '\0';
    fields[n++] = line;
    for (char *p = line; *p && n < max; p++) {
        if (*p == ':') {
            *p = '\0';
            fields[n++] = p + 1;
        }
    }
    return n;
}

/* Looks a user up by name (name != NULL) or by uid; 0 when found. */
static int find_account(const char *name, uid_t uid, struct account *out)
{
    char line[1024];
    char *f[7];
    int found = -1;
    FILE *fp = fopen("/etc/passwd", "r");
    if (!fp)
        return -1;
    while (found && fgets(line, sizeof line, fp)) {
        if (split(line, f, 7) < 7)
            continue;
        if (name ? strcmp(f[0], name) != 0 : (uid_t)strtoul(f[2], NULL, 10) != uid)
            continue;
        snprintf(out->name, sizeof out->name, "%s", f[0]);
        out->uid = (uid_t)strtoul(f[2], NULL, 10);
        out->gid = (gid_t)strtoul(f[3], NULL, 10);
        snprintf(out->home, sizeof out->home, "%s", f[5]);
        snprintf(out->shell, sizeof out->shell, "%s", *f[6] ? f[6] : "/bin/sh");
        found = 0;
    }
    fclose(fp);
    return found;
}

/* The primary group of `user`, then those /etc/group lists it in (each once). */
static int groups_of(const struct account *user, gid_t *groups)
{
    char line[4096];
    char *f[4];
    int n = 0;
    groups[n++] = user->gid;
    FILE *fp = fopen("/etc/group", "r");
    if (!fp)
        return n;
    while (n < MAX_GROUPS && fgets(line, sizeof line, fp)) {
        if (split(line, f, 4) < 4)
            continue;
        gid_t gid = (gid_t)strtoul(f[2], NULL, 10);
        if (gid == user->gid)
            continue;
        for (char *m = strtok(f[3], ","); m; m = strtok(NULL, ","))
            if (strcmp(m, user->name) == 0) {
                groups[n++] = gid;
                break;
            }
    }
    fclose(fp);
    return n;
}

/* Root, or a process with staff among its groups, or a user /etc/group puts in staff. */
static int caller_allowed(const struct account *caller)
{
    gid_t groups[MAX_GROUPS];
    if (getuid() == 0 || getgid() == STAFF_GID)
        return 1;
    int n = getgroups(MAX_GROUPS, groups);
    for (int i = 0; i < n; i++)
        if (groups[i] == STAFF_GID)
            return 1;
    n = groups_of(caller, groups);
    for (int i = 0; i < n; i++)
        if (groups[i] == STAFF_GID)
            return 1;
    return 0;
}

static void set_env(const struct account *caller, const struct account *target, int keep)
{
    char buf[32];
    if (!keep) {
        const char *term = getenv("TERM");
        char *saved = term ? strdup(term) : NULL;
        clearenv();
        setenv("PATH", SAFE_PATH, 1);
        if (saved)
            setenv("TERM", saved, 1);
        setenv("HOME", target->home, 1);
        setenv("SHELL", target->shell, 1);
        setenv("USER", target->name, 1);
        setenv("LOGNAME", target->name, 1);
    }
    setenv("SUDO_USER", caller->name, 1);
    snprintf(buf, sizeof buf, "%u", (unsigned)caller->uid);
    setenv("SUDO_UID", buf, 1);
    snprintf(buf, sizeof buf, "%u", (unsigned)caller->gid);
    setenv("SUDO_GID", buf, 1);
}

static void become(const struct account *target)
{
    gid_t groups[MAX_GROUPS];
    int n = groups_of(target, groups);
    if (setgroups((size_t)n, groups) || setgid(target->gid) || setuid(target->uid))
        die("cannot change to the target user (is sudo setuid root?)");
}

int main(int argc, char **argv)
{
    struct account caller, target;
    const char *user = "root";
    int keep_env = 0, set_home = 0, shell = 0, opt;

    while ((opt = getopt(argc, argv, "+EHnSsu:")) != -1) {
        switch (opt) {
        case 'E': keep_env = 1; break;
        case 'H': set_home = 1; break;
        case 'n': case 'S': break; /* never a password prompt anyway */
        case 's': shell = 1; break;
        case 'u': user = optarg; break;
        default: die("usage: sudo [-E] [-H] [-n] [-S] [-u USER] [-s | COMMAND [ARG...]]");
        }
    }
    if (optind >= argc && !shell)
        die("usage: sudo [-E] [-H] [-n] [-S] [-u USER] [-s | COMMAND [ARG...]]");
    if (find_account(NULL, getuid(), &caller))
        die("you do not exist in /etc/passwd");
    if (!caller_allowed(&caller))
        die("you are not in group staff (this stand-in sudo allows only root and staff)");
    if (find_account(user, 0, &target))
        die("unknown user");
    set_env(&caller, &target, keep_env);
    if (set_home)
        setenv("HOME", target.home, 1);
    become(&target);
    if (optind >= argc) {
        char *sh[] = {target.shell, NULL};
        execv(target.shell, sh);
    } else {
        execvp(argv[optind], &argv[optind]);
    }
    fprintf(stderr, "sudo: %s: %s\n", optind < argc ? argv[optind] : target.shell,
            strerror(errno));
    return errno == ENOENT ? 127 : 126;
}
