/* UDP request/response load for the benchmark harness's `udp` scenario (compiled by the harness with cc).
 *
 *   udpload echo PORT                               a UDP echo target on 127.0.0.1:PORT
 *   udpload load PORT FLOWS DEPTH SECONDS SIZE      FLOWS client sockets (one flow each, like DNS
 *                                                   resolvers' source ports), each keeping DEPTH
 *                                                   SIZE-byte requests outstanding, for SECONDS
 *
 * `load` prints "received N", "sent N", "resent N" and "seconds S". A flow that got no answer for half a
 * second is refilled (UDP loses datagrams under overload; a closed loop would otherwise stall). Written in
 * C so that the client costs far less than any load balancer it drives on a shared 2-core machine.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static struct sockaddr_in loopback(int port) {
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return a;
}

static int echo(int port) {
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in a = loopback(port);
    int big = 4 << 20;
    setsockopt(s, SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
    if (bind(s, (struct sockaddr *)&a, sizeof a) < 0) {
        perror("bind");
        return 1;
    }
    char buf[65536];
    for (;;) {
        struct sockaddr_in from;
        socklen_t len = sizeof from;
        ssize_t n = recvfrom(s, buf, sizeof buf, 0, (struct sockaddr *)&from, &len);
        if (n >= 0)
            sendto(s, buf, n, 0, (struct sockaddr *)&from, len);
    }
}

static int load(int port, int flows, int depth, double seconds, int size) {
    int ep = epoll_create1(0);
    int *fds = calloc(flows, sizeof *fds);
    double *last = calloc(flows, sizeof *last);
    char msg[65536], buf[65536];
    memset(msg, 'q', size);
    struct sockaddr_in to = loopback(port);
    long received = 0, sent = 0, resent = 0;
    double start = now();
    for (int i = 0; i < flows; i++) {
        fds[i] = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
        if (connect(fds[i], (struct sockaddr *)&to, sizeof to) < 0) {
            perror("connect");
            return 1;
        }
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = i};
        epoll_ctl(ep, EPOLL_CTL_ADD, fds[i], &ev);
        for (int d = 0; d < depth; d++)
            sent += send(fds[i], msg, size, 0) == size;
        last[i] = start;
    }
    double end = start + seconds, tick = start, t = start;
    struct epoll_event events[256];
    while ((t = now()) < end) {
        int n = epoll_wait(ep, events, 256, 50);
        for (int k = 0; k < n; k++) {
            int i = events[k].data.u32;
            while (recv(fds[i], buf, sizeof buf, 0) >= 0) {
                received++;
                last[i] = t;
                sent += send(fds[i], msg, size, 0) == size;
            }
        }
        if (t - tick > 0.1) {
            tick = t;
            for (int i = 0; i < flows; i++) {
                if (t - last[i] > 0.5) {
                    for (int d = 0; d < depth; d++)
                        resent += send(fds[i], msg, size, 0) == size;
                    last[i] = t;
                }
            }
        }
    }
    printf("received %ld\nsent %ld\nresent %ld\nseconds %.3f\n", received, sent, resent, t - start);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "echo") == 0)
        return echo(atoi(argv[2]));
    if (argc == 7 && strcmp(argv[1], "load") == 0)
        return load(atoi(argv[2]), atoi(argv[3]), atoi(argv[4]), atof(argv[5]), atoi(argv[6]));
    fprintf(stderr, "usage: udpload echo PORT | udpload load PORT FLOWS DEPTH SECONDS SIZE\n");
    return 2;
}
