/* The bed's pod network check, built static so its image is one file (like pause.c).
 *
 *   netcheck serve PORT           answer each TCP connection's first line with
 *                                 "<hostname> <line>" (the hostname is the pod's name), and log
 *                                 the peer's address on stdout
 *   netcheck ask HOST PORT TEXT   send TEXT, print the answer; exit 1 with the reason on stderr
 *
 * Every read and connect is bounded: 256 bytes, 3 seconds. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#define MAX 256

static void bounded(int fd) {
    struct timeval tv = {3, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv); /* connect() too, on Linux */
}

/* One line (without its newline), at most MAX-1 bytes, until EOF, newline or timeout. */
static int read_line(int fd, char *buf) {
    int n = 0;
    while (n < MAX - 1) {
        ssize_t r = read(fd, buf + n, (size_t)(MAX - 1 - n));
        if (r <= 0)
            break;
        n += (int)r;
        if (memchr(buf, '\n', (size_t)n))
            break;
    }
    buf[n] = 0;
    char *nl = strchr(buf, '\n');
    if (nl)
        *nl = 0;
    return n;
}

static int serve(int port) {
    char host[64] = {0};
    gethostname(host, sizeof host - 1);
    int s = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((unsigned short)port)};
    if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof a) || listen(s, 16)) {
        perror("netcheck serve");
        return 1;
    }
    printf("%s listening on %d\n", host, port);
    fflush(stdout);
    for (;;) {
        struct sockaddr_in peer;
        socklen_t len = sizeof peer;
        int c = accept(s, (struct sockaddr *)&peer, &len);
        if (c < 0)
            continue;
        bounded(c);
        char line[MAX], out[MAX + 80];
        read_line(c, line);
        int n = snprintf(out, sizeof out, "%s %s\n", host, line);
        if (write(c, out, (size_t)n) < 0) { /* the asker is gone: nothing to do */ }
        close(c);
        printf("answered %s\n", inet_ntoa(peer.sin_addr));
        fflush(stdout);
    }
}

static int ask(const char *host, int port, const char *text) {
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((unsigned short)port)};
    if (inet_pton(AF_INET, host, &a.sin_addr) != 1) {
        fprintf(stderr, "netcheck ask: %s is not an IPv4 address\n", host);
        return 1;
    }
    int s = socket(AF_INET, SOCK_STREAM, 0);
    bounded(s);
    if (connect(s, (struct sockaddr *)&a, sizeof a)) {
        /* A connect that ran out of SO_SNDTIMEO says EINPROGRESS. */
        fprintf(stderr, "netcheck ask: connect %s:%d: %s\n", host, port,
                errno == EINPROGRESS ? "timed out" : strerror(errno));
        return 1;
    }
    char msg[MAX], line[MAX];
    int n = snprintf(msg, sizeof msg, "%s\n", text);
    if (write(s, msg, (size_t)n) != n) {
        fprintf(stderr, "netcheck ask: send: %s\n", strerror(errno));
        return 1;
    }
    shutdown(s, SHUT_WR);
    if (read_line(s, line) <= 0) {
        fprintf(stderr, "netcheck ask: no answer from %s:%d\n", host, port);
        return 1;
    }
    printf("%s\n", line);
    return 0;
}

static void stop(int sig) { (void)sig; _exit(0); }

int main(int argc, char **argv) {
    signal(SIGPIPE, SIG_IGN);
    signal(SIGTERM, stop); /* pid 1 in its container: no default action */
    if (argc == 3 && !strcmp(argv[1], "serve"))
        return serve(atoi(argv[2]));
    if (argc == 5 && !strcmp(argv[1], "ask"))
        return ask(argv[2], atoi(argv[3]), argv[4]);
    fprintf(stderr, "usage: netcheck serve PORT | netcheck ask HOST PORT TEXT\n");
    return 2;
}
