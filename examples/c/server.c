/*
 * A complete message-delivery server in C on cartero's engine: its own sockets, one thread
 * per request connection and one per push, and the engine behind one mutex. Same flags and
 * console lines as `cartero serve` (state in memory).
 *
 *   cc -Wall -Wextra -Iinclude examples/c/server.c target/release/libcartero.a \
 *      -lpthread -ldl -lm -lrt -lutil -o cartero-server-c
 *   ./cartero-server-c -p 8888
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "cartero.h"

static struct {
    int port;
    const char *bind;
    bool raw_codes;
    bool underscored;
    uint64_t request_timeout_ms;
    uint64_t delivery_timeout_ms;
    uint64_t grace_ms;
} opt = {-1, "0.0.0.0", false, false, 5000, 2000, 100};

static cartero_engine *engine;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t idle = PTHREAD_COND_INITIALIZER;
static int active; /* connection and push threads running; under lock */
static volatile sig_atomic_t stopping;

static uint64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void fail(const char *what, cartero_result r) {
    fprintf(stderr, "cartero-server-c: %s: %s\n", what, cartero_result_message(r));
}

/* Prints the engine's console lines. Called with the lock held, so lines keep engine order. */
static void print_events(void) {
    cartero_bytes *line;
    while (cartero_engine_poll_event(engine, &line) == CARTERO_OK) {
        fwrite(cartero_bytes_data(line), 1, cartero_bytes_len(line), stdout);
        fputc('\n', stdout);
        cartero_bytes_free(line);
    }
    fflush(stdout);
}

/* Waits until `fd` is ready for `events` or the deadline passes; false on timeout or error. */
static bool wait_fd(int fd, short events, uint64_t deadline) {
    for (;;) {
        uint64_t now = now_ms();
        if (now >= deadline) return false;
        struct pollfd p = {.fd = fd, .events = events};
        int n = poll(&p, 1, (int)(deadline - now));
        if (n > 0) return true;
        if (n == 0) return false;
        if (errno != EINTR) return false;
    }
}

static bool write_all(int fd, const uint8_t *data, size_t len, uint64_t deadline) {
    while (len > 0) {
        if (!wait_fd(fd, POLLOUT, deadline)) return false;
        ssize_t n = send(fd, data, len, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR || errno == EAGAIN) continue;
            return false;
        }
        data += n;
        len -= (size_t)n;
    }
    return true;
}

/* One push: connect, write, shut down our side, read until the listener closes (SPEC 3). */
static bool push(const char *ip, uint16_t port, const uint8_t *data, size_t len, uint64_t deadline) {
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    socklen_t sl;
    struct sockaddr_in *v4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, ip, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons(port);
        sl = sizeof *v4;
    } else if (inet_pton(AF_INET6, ip, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons(port);
        sl = sizeof *v6;
    } else {
        return false;
    }
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return false;
    bool ok = false;
    if (connect(fd, (struct sockaddr *)&ss, sl) < 0 && errno != EINPROGRESS) goto out;
    if (!wait_fd(fd, POLLOUT, deadline)) goto out;
    int err = 0;
    socklen_t el = sizeof err;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) < 0 || err != 0) goto out;
    if (!write_all(fd, data, len, deadline)) goto out;
    if (shutdown(fd, SHUT_WR) < 0) goto out;
    for (;;) {
        if (!wait_fd(fd, POLLIN, deadline)) goto out;
        char sink[512];
        ssize_t n = recv(fd, sink, sizeof sink, 0);
        if (n == 0) {
            ok = true; /* a clean close: delivered */
            break;
        }
        if (n < 0 && errno != EINTR && errno != EAGAIN) goto out; /* a reset: not delivered */
    }
out:
    close(fd);
    return ok;
}

static void pump(void);

static void *deliver(void *arg) {
    cartero_delivery *d = arg;
    bool ok = push(cartero_delivery_ip(d), cartero_delivery_port(d), cartero_delivery_data(d), cartero_delivery_len(d),
                   cartero_delivery_deadline_ms(d));
    pthread_mutex_lock(&lock);
    /* CARTERO_UNKNOWN_DELIVERY: the engine's own timeout came first; nothing to do. */
    cartero_engine_delivery_result(engine, cartero_delivery_id(d), ok);
    pump();
    active--;
    pthread_cond_broadcast(&idle);
    pthread_mutex_unlock(&lock);
    cartero_delivery_free(d);
    return NULL;
}

/* Starts a thread for every push the engine has ready. Called with the lock held. */
static void pump(void) {
    cartero_delivery *d;
    while (cartero_engine_poll_delivery(engine, now_ms(), &d) == CARTERO_OK) {
        pthread_t t;
        active++;
        if (pthread_create(&t, NULL, deliver, d) != 0) {
            active--;
            cartero_engine_delivery_result(engine, cartero_delivery_id(d), false);
            cartero_delivery_free(d);
            continue;
        }
        pthread_detach(t);
    }
    print_events();
}

struct conn {
    int fd;
    char ip[INET6_ADDRSTRLEN];
};

static void *serve_conn(void *arg) {
    struct conn c = *(struct conn *)arg;
    free(arg);
    cartero_request_decoder *dec = NULL;
    cartero_result r = cartero_request_decoder_new(&dec);
    uint64_t deadline = now_ms() + opt.request_timeout_ms;
    if (r == CARTERO_OK) r = CARTERO_NEED_MORE;
    while (r == CARTERO_NEED_MORE) {
        bool short_form = cartero_request_decoder_has_short_form(dec);
        uint64_t now = now_ms();
        uint64_t until = deadline;
        if (short_form && now + opt.grace_ms < until) until = now + opt.grace_ms;
        if (!wait_fd(c.fd, POLLIN, until)) {
            /* Time is up: a short form is complete; anything else is a late request. */
            r = short_form ? cartero_request_decoder_finish(dec, false) : CARTERO_BAD_REQUEST;
            break;
        }
        uint8_t buf[1024];
        ssize_t n = recv(c.fd, buf, sizeof buf, 0);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) r = CARTERO_BAD_REQUEST;
        else if (n == 0) r = cartero_request_decoder_finish(dec, true);
        else r = cartero_request_decoder_feed(dec, buf, (size_t)n);
    }

    cartero_bytes *reply = NULL;
    uint64_t hold = 0;
    bool held = false;
    if (r == CARTERO_OK) {
        pthread_mutex_lock(&lock);
        cartero_result h = cartero_engine_handle_request(engine, dec, c.ip, &reply, &hold);
        if (h == CARTERO_OK) held = true;
        else fail("handle_request", h);
        print_events();
        pthread_mutex_unlock(&lock);
    } else if (r == CARTERO_BAD_REQUEST && dec != NULL) {
        cartero_request_decoder_error_reply(dec, opt.raw_codes, &reply);
    }
    if (reply != NULL) {
        write_all(c.fd, cartero_bytes_data(reply), cartero_bytes_len(reply), now_ms() + 1000);
        cartero_bytes_free(reply);
    }
    if (held) {
        /* The reply is out: the pushes it caused may go. */
        pthread_mutex_lock(&lock);
        cartero_engine_release(engine, hold);
        pump();
        pthread_mutex_unlock(&lock);
    }
    /* End gracefully: read what the client still sends, for a moment, so no reset
       destroys the reply before the client reads it. */
    shutdown(c.fd, SHUT_WR);
    uint64_t linger = now_ms() + 500;
    char sink[512];
    while (wait_fd(c.fd, POLLIN, linger) && recv(c.fd, sink, sizeof sink, 0) > 0) {
    }
    close(c.fd);
    cartero_request_decoder_free(dec);
    pthread_mutex_lock(&lock);
    active--;
    pthread_cond_broadcast(&idle);
    pthread_mutex_unlock(&lock);
    return NULL;
}

/* Fails pushes that outlived the delivery timeout, as a safety net behind each push's own. */
static void *timer(void *arg) {
    (void)arg;
    while (!stopping) {
        usleep(100 * 1000);
        pthread_mutex_lock(&lock);
        size_t expired = 0;
        cartero_engine_handle_timeout(engine, now_ms(), &expired);
        if (expired > 0) pump();
        pthread_mutex_unlock(&lock);
    }
    return NULL;
}

static void on_signal(int sig) {
    (void)sig;
    stopping = 1;
}

/* "5s", "100ms", "1.5s" or a bare number of seconds, in milliseconds; 0 if malformed. */
static uint64_t parse_ms(const char *text) {
    char *end;
    double v = strtod(text, &end);
    if (end == text || v < 0) return 0;
    if (strcmp(end, "ms") == 0) return (uint64_t)v;
    if (strcmp(end, "s") == 0 || *end == '\0') return (uint64_t)(v * 1000);
    return 0;
}

#define USAGE                                                                                                 \
    "usage: cartero-server-c -p <port> [--bind <ip>] [--codes ascii|raw] [--push-names spaced|underscored]\n" \
    "                        [--request-timeout 5s] [--delivery-timeout 2s] [--grace 100ms] [--memory]\n"

static void usage(void) {
    fputs(USAGE, stderr);
    exit(2);
}

static void display_ip(char *out, size_t cap) {
    snprintf(out, cap, "%s", opt.bind);
    if (strcmp(opt.bind, "0.0.0.0") != 0) return;
    snprintf(out, cap, "127.0.0.1");
    struct ifaddrs *ifs;
    if (getifaddrs(&ifs) != 0) return;
    for (struct ifaddrs *i = ifs; i != NULL; i = i->ifa_next) {
        if (i->ifa_addr == NULL || i->ifa_addr->sa_family != AF_INET) continue;
        struct in_addr a = ((struct sockaddr_in *)i->ifa_addr)->sin_addr;
        if ((ntohl(a.s_addr) >> 24) == 127) continue;
        inet_ntop(AF_INET, &a, out, (socklen_t)cap);
        break;
    }
    freeifaddrs(ifs);
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            fputs(USAGE, stdout);
            return 0;
        }
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--memory") == 0) continue; /* the only storage here */
        if (v == NULL) usage();
        if (strcmp(a, "-p") == 0 || strcmp(a, "--port") == 0) opt.port = atoi(v);
        else if (strcmp(a, "--bind") == 0) opt.bind = v;
        else if (strcmp(a, "--codes") == 0) {
            if (strcmp(v, "raw") != 0 && strcmp(v, "ascii") != 0) usage();
            opt.raw_codes = strcmp(v, "raw") == 0;
        } else if (strcmp(a, "--push-names") == 0) {
            if (strcmp(v, "underscored") != 0 && strcmp(v, "spaced") != 0) usage();
            opt.underscored = strcmp(v, "underscored") == 0;
        } else if (strcmp(a, "--request-timeout") == 0) opt.request_timeout_ms = parse_ms(v);
        else if (strcmp(a, "--delivery-timeout") == 0) opt.delivery_timeout_ms = parse_ms(v);
        else if (strcmp(a, "--grace") == 0) opt.grace_ms = parse_ms(v);
        else usage();
        i++;
    }
    if (opt.port < 0 || opt.port > 65535 || opt.request_timeout_ms == 0 || opt.delivery_timeout_ms == 0) usage();

    cartero_engine_config config;
    cartero_engine_config_default(&config);
    config.raw_codes = opt.raw_codes;
    config.underscored_push_names = opt.underscored;
    config.delivery_timeout_ms = (uint32_t)opt.delivery_timeout_ms;
    cartero_result r = cartero_engine_new(&config, &engine);
    if (r != CARTERO_OK) {
        fail("cannot create the engine", r);
        return 1;
    }

    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)opt.port)};
    if (inet_pton(AF_INET, opt.bind, &addr.sin_addr) != 1) {
        fprintf(stderr, "cartero-server-c: --bind %s is not an IPv4 address\n", opt.bind);
        return 1;
    }
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(lfd, 1024) < 0) {
        fprintf(stderr, "cartero-server-c: cannot listen on %s:%d: %s\n", opt.bind, opt.port, strerror(errno));
        return 1;
    }
    socklen_t al = sizeof addr;
    getsockname(lfd, (struct sockaddr *)&addr, &al);
    char shown[INET6_ADDRSTRLEN];
    display_ip(shown, sizeof shown);
    printf("s> init server %s:%d\ns>\n", shown, ntohs(addr.sin_port));
    fflush(stdout);

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    pthread_t timer_thread;
    pthread_create(&timer_thread, NULL, timer, NULL);

    while (!stopping) {
        struct pollfd p = {.fd = lfd, .events = POLLIN};
        if (poll(&p, 1, 200) <= 0) continue;
        struct sockaddr_storage peer;
        socklen_t pl = sizeof peer;
        int fd = accept4(lfd, (struct sockaddr *)&peer, &pl, SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE) usleep(50 * 1000); /* out of descriptors: back off */
            continue;
        }
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct conn *c = calloc(1, sizeof *c);
        if (c == NULL) {
            close(fd);
            continue;
        }
        c->fd = fd;
        if (peer.ss_family == AF_INET) inet_ntop(AF_INET, &((struct sockaddr_in *)&peer)->sin_addr, c->ip, sizeof c->ip);
        else inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&peer)->sin6_addr, c->ip, sizeof c->ip);
        pthread_t t;
        pthread_mutex_lock(&lock);
        active++;
        pthread_mutex_unlock(&lock);
        if (pthread_create(&t, NULL, serve_conn, c) != 0) {
            pthread_mutex_lock(&lock);
            active--;
            pthread_mutex_unlock(&lock);
            close(fd);
            free(c);
            continue;
        }
        pthread_detach(t);
    }

    /* SIGINT: stop accepting, let requests in progress finish and pushes in flight end. */
    close(lfd);
    pthread_mutex_lock(&lock);
    while (active > 0) pthread_cond_wait(&idle, &lock);
    pthread_mutex_unlock(&lock);
    pthread_join(timer_thread, NULL);
    cartero_engine_free(engine);
    return 0;
}
