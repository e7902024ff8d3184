/*
 * The course's console client (SPEC 6, and SPEC 8's SENDATTACH, USERS and GETFILE) in C, on
 * cartero's blocking client and listener. Same commands and output lines as
 * `cartero client`; causes of failures go to stderr. `--course 2025` prints the 2025/26
 * result lines (`FAIL, USER ...` where 2022/23 has `FAIL / USER ...`).
 *
 *   cc -Wall -Wextra -Iinclude examples/c/client.c target/release/libcartero.a \
 *      -lpthread -ldl -lm -lrt -lutil -o cartero-client-c
 *   ./cartero-client-c -s localhost -p 8888 [--course 2022|2025] [--listen-host <ip>]
 *
 * The listener binds --listen-host, by default this machine's address towards the server
 * (127.0.0.1 for a local server, the LAN address for a remote one).
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netdb.h>
#include <sys/socket.h>

#include "cartero.h"

static pthread_mutex_t out_lock = PTHREAD_MUTEX_INITIALIZER;
/* Held from a SEND's request to its printed reply, so that its acknowledgement (a push the
 * listener may get first) never prints above the reply. Taken before out_lock. */
static pthread_mutex_t replying = PTHREAD_MUTEX_INITIALIZER;
static cartero_client *client;
static char user[256];          /* the alias last registered or connected: SEND's sender */
static char connected[256];     /* the alias connected from here, "" if none */
static cartero_listener *listener;
static pthread_t printer;
static volatile int stop_printer;
static const char *sep = " / ";  /* " / " (2022/23) or ", " (2025/26) in result lines */
static char listen_host[64] = "0.0.0.0"; /* where the listener binds */

/* The local address of a socket that reaches host:port (a UDP connect sends no packet) into
 * listen_host; left as is when it cannot be told. */
static void address_towards(const char *host, int port) {
    char service[16];
    snprintf(service, sizeof service, "%d", port);
    struct addrinfo hints = {.ai_socktype = SOCK_DGRAM}, *res;
    if (getaddrinfo(host, service, &hints, &res) != 0) return;
    int fd = socket(res->ai_family, SOCK_DGRAM, 0);
    struct sockaddr_storage local;
    socklen_t len = sizeof local;
    if (fd >= 0 && connect(fd, res->ai_addr, res->ai_addrlen) == 0 &&
        getsockname(fd, (struct sockaddr *)&local, &len) == 0) {
        const void *a = local.ss_family == AF_INET ? (const void *)&((struct sockaddr_in *)&local)->sin_addr
                                                   : (const void *)&((struct sockaddr_in6 *)&local)->sin6_addr;
        char text[64];
        if (inet_ntop(local.ss_family, a, text, sizeof text) != NULL) snprintf(listen_host, sizeof listen_host, "%s", text);
    }
    if (fd >= 0) close(fd);
    freeaddrinfo(res);
}

/* The last USERS answer: where each user listens (GETFILE looks users up here). */
#define MAX_KNOWN 256
static struct known_user {
    char name[256];
    char ip[64];
    uint16_t port;
} known[MAX_KNOWN];
static size_t known_count;

static void say(const char *line) {
    pthread_mutex_lock(&out_lock);
    puts(line);
    fflush(stdout);
    pthread_mutex_unlock(&out_lock);
}

static void cause(cartero_result r) {
    fprintf(stderr, "cartero-client-c: %s\n", cartero_result_message(r));
}

/* Prints the pushes the listener receives until told to stop. */
static void *print_pushes(void *arg) {
    (void)arg;
    while (!stop_printer) {
        cartero_push *p = NULL;
        cartero_result r = cartero_listener_next(listener, 100, &p);
        if (r == CARTERO_TIMEOUT) continue;
        if (r != CARTERO_OK) break;
        pthread_mutex_lock(&replying);
        pthread_mutex_lock(&out_lock);
        const char *file = cartero_push_file(p);
        if (cartero_push_is_ack(p) && file[0]) printf("s> SENDATTACH MESSAGE %u %s OK\n", cartero_push_id(p), file);
        else if (cartero_push_is_ack(p)) printf("s> SEND MESSAGE %u OK\n", cartero_push_id(p));
        else {
            printf("s> MESSAGE %u FROM %s\n   %s\n   END\n", cartero_push_id(p), cartero_push_sender(p), cartero_push_body(p));
            if (file[0]) printf("   FILE %s\n", file);
        }
        fflush(stdout);
        pthread_mutex_unlock(&out_lock);
        pthread_mutex_unlock(&replying);
        cartero_push_free(p);
    }
    return NULL;
}

static void stop_listener(void) {
    if (listener == NULL) return;
    stop_printer = 1;
    pthread_join(printer, NULL);
    cartero_listener_free(listener);
    listener = NULL;
    connected[0] = '\0';
}

static void do_register(char *alias, char *date, char *full_name) {
    uint8_t code;
    cartero_result r = cartero_client_register(client, full_name ? full_name : alias, alias, date, &code);
    /* The short form against a server that waits for the statement's three fields. */
    int short_refused = date == NULL && (r == CARTERO_TIMEOUT || (r == CARTERO_OK && code == 2));
    if (r != CARTERO_OK) {
        cause(r);
        say("s> REGISTER FAIL");
    } else {
        if (code == 0) snprintf(user, sizeof user, "%s", alias);
        say(code == 0 ? "s> REGISTER OK" : code == 1 ? "s> USERNAME IN USE" : "s> REGISTER FAIL");
    }
    if (short_refused) fprintf(stderr, "cartero-client-c: this server may need REGISTER <alias> <DD/MM/YYYY> [name]\n");
}

static void do_unregister(char *alias) {
    uint8_t code;
    cartero_result r = cartero_client_unregister(client, alias, &code);
    if (r != CARTERO_OK) {
        cause(r);
        say("s> UNREGISTER FAIL");
        return;
    }
    if (code == 0 && strcmp(user, alias) == 0) user[0] = '\0';
    say(code == 0 ? "s> UNREGISTER OK" : code == 1 ? "s> USER DOES NOT EXIST" : "s> UNREGISTER FAIL");
}

static void do_connect(char *alias) {
    if (listener != NULL) {
        fprintf(stderr, "cartero-client-c: %s is already connected from this client; DISCONNECT %s first\n", connected, connected);
        say("s> USER ALREADY CONNECTED"); /* the statement's line for this situation */
        return;
    }
    cartero_result r = cartero_listener_new(listen_host, &listener);
    if (r != CARTERO_OK) {
        cause(r);
        say("s> CONNECT FAIL");
        return;
    }
    uint8_t code = 3;
    r = cartero_client_connect(client, alias, cartero_listener_port(listener), &code);
    if (r != CARTERO_OK) cause(r);
    if (r != CARTERO_OK || code != 0) {
        cartero_listener_free(listener);
        listener = NULL;
    }
    say(r != CARTERO_OK ? "s> CONNECT FAIL"
        : code == 0     ? "s> CONNECT OK"
        : code == 1     ? "s> CONNECT FAIL, USER DOES NOT EXIST"
        : code == 2     ? "s> USER ALREADY CONNECTED"
                        : "s> CONNECT FAIL");
    if (listener != NULL) {
        snprintf(connected, sizeof connected, "%s", alias);
        snprintf(user, sizeof user, "%s", alias);
        stop_printer = 0;
        pthread_create(&printer, NULL, print_pushes, NULL);
    }
}

static void do_disconnect(char *alias) {
    uint8_t code = 3;
    cartero_result r = cartero_client_disconnect(client, alias, &code);
    /* The listener stops whatever the server answered. */
    if (listener != NULL && strcmp(connected, alias) == 0) stop_listener();
    if (r != CARTERO_OK) cause(r);
    char line[64];
    if (r == CARTERO_OK && code == 1) snprintf(line, sizeof line, "s> DISCONNECT FAIL%sUSER DOES NOT EXIST", sep);
    else if (r == CARTERO_OK && code == 2) snprintf(line, sizeof line, "s> DISCONNECT FAIL%sUSER NOT CONNECTED", sep);
    else snprintf(line, sizeof line, "%s", r == CARTERO_OK && code == 0 ? "s> DISCONNECT OK" : "s> DISCONNECT FAIL");
    say(line);
}

static void do_send(char *recipient, char *body) {
    if (user[0] == '\0') {
        fprintf(stderr, "cartero-client-c: SEND needs a user: REGISTER or CONNECT first\n");
        say("s> SEND FAIL");
        return;
    }
    uint8_t code;
    uint32_t id = 0;
    pthread_mutex_lock(&replying);
    cartero_result r = cartero_client_send(client, user, recipient, body, &code, &id);
    char line[64];
    if (r != CARTERO_OK) {
        cause(r);
        snprintf(line, sizeof line, "s> SEND FAIL");
    } else if (code == 0) snprintf(line, sizeof line, "s> SEND OK - MESSAGE %u", id);
    else if (code == 1) snprintf(line, sizeof line, "s> SEND FAIL%sUSER DOES NOT EXIST", sep);
    else snprintf(line, sizeof line, "s> SEND FAIL");
    say(line);
    pthread_mutex_unlock(&replying);
}

static void do_send_attach(char *recipient, char *body, char *file) {
    if (user[0] == '\0') {
        fprintf(stderr, "cartero-client-c: SENDATTACH needs a user: REGISTER or CONNECT first\n");
        say("s> SENDATTACH FAIL");
        return;
    }
    if (strlen(file) > CARTERO_MAX_FIELD_LEN) {
        fprintf(stderr, "cartero-client-c: the file name has %zu bytes; at most %d fit\n", strlen(file), CARTERO_MAX_FIELD_LEN);
        say("s> SENDATTACH FAIL");
        return;
    }
    if (file[0] != '/')
        fprintf(stderr, "cartero-client-c: \"%s\" is not an absolute path (the statement asks for one); it is sent as is\n", file);
    uint8_t code = 2;
    uint32_t id = 0;
    pthread_mutex_lock(&replying);
    cartero_result r = cartero_client_send_attach(client, user, recipient, body, file, &code, &id);
    if (r != CARTERO_OK) {
        cause(r);
        code = 2;
    }
    if (r == CARTERO_OK && code == 0 && (listener == NULL || cartero_listener_offer(listener, file) != CARTERO_OK))
        fprintf(stderr, "cartero-client-c: \"%s\" cannot be offered to GETFILE (CONNECT first)\n", file);
    char line[64];
    snprintf(line, sizeof line, "s> SENDATTACH OK - MESSAGE %u", id);
    say(code == 0 ? line : code == 1 ? "s> SENDATTACH FAIL, USER DOES NOT EXIST" : "s> SENDATTACH FAIL");
    pthread_mutex_unlock(&replying);
}

/* USERS; with print == 0 it only refreshes the table of known users. */
static void do_users(int print) {
    uint8_t code;
    cartero_bytes *users = NULL;
    size_t count = 0;
    cartero_result r = cartero_client_users(client, user[0] ? user : NULL, &code, &users, &count);
    if (r != CARTERO_OK) {
        cause(r);
        if (print) say("s> CONNECTED USERS FAIL");
        return;
    }
    if (code != 0) {
        char line[64];
        if (code == 1) snprintf(line, sizeof line, "s> CONNECTED USERS FAIL%sUSER IS NOT CONNECTED", sep);
        else snprintf(line, sizeof line, "s> CONNECTED USERS FAIL");
        if (print) say(line);
        return;
    }
    pthread_mutex_lock(&out_lock);
    if (print) printf("s> CONNECTED USERS (%zu users connected) OK\n", count);
    const char *field = (const char *)cartero_bytes_data(users);
    known_count = 0;
    for (size_t i = 0; i < count; i++) {
        const char *name = field, *ip = name + strlen(name) + 1, *port = ip + strlen(ip) + 1;
        field = port + strlen(port) + 1;
        if (print) printf("%s\n", name);
        if (known_count < MAX_KNOWN) {
            struct known_user *k = &known[known_count++];
            snprintf(k->name, sizeof k->name, "%s", name);
            snprintf(k->ip, sizeof k->ip, "%s", ip);
            k->port = (uint16_t)atoi(port);
        }
    }
    fflush(stdout);
    pthread_mutex_unlock(&out_lock);
    cartero_bytes_free(users);
}

static struct known_user *find_known(const char *name) {
    for (size_t i = 0; i < known_count; i++)
        if (strcmp(known[i].name, name) == 0) return &known[i];
    return NULL;
}

static void do_get_file(char *who, char *remote, char *local) {
    if (user[0] == '\0') {
        fprintf(stderr, "cartero-client-c: GETFILE needs a user: REGISTER or CONNECT first\n");
        say("c> FILE TRANSFER FAILED");
        return;
    }
    struct known_user *k = find_known(who);
    if (k == NULL) {
        do_users(0); /* once: the last USERS answer may be older than the user's CONNECT */
        k = find_known(who);
    }
    if (k == NULL) {
        say("c> FILE TRANSFER FAILED, user not connected.");
        return;
    }
    cartero_result r = cartero_get_file(k->ip, k->port, user, remote, local, 0);
    if (r != CARTERO_OK) {
        fprintf(stderr, "cartero-client-c: %s; no file was written to %s\n", cartero_result_message(r), local);
        say("c> FILE TRANSFER FAILED");
        return;
    }
    say("c> FILE TRANSFER OK");
}

static void do_connected_users(void) {
    uint8_t code;
    cartero_bytes *users = NULL;
    size_t count = 0;
    cartero_result r = cartero_client_connected_users(client, user[0] ? user : NULL, &code, &users, &count);
    if (r != CARTERO_OK) {
        cause(r);
        say("s> CONNECTED USERS FAIL");
        return;
    }
    if (code != 0) {
        char line[64];
        if (code == 1) snprintf(line, sizeof line, "s> CONNECTED USERS FAIL%sUSER IS NOT CONNECTED", sep);
        else snprintf(line, sizeof line, "s> CONNECTED USERS FAIL");
        say(line);
        return;
    }
    pthread_mutex_lock(&out_lock);
    printf("s> CONNECTED USERS (%zu users connected) OK - ", count);
    const char *name = (const char *)cartero_bytes_data(users);
    for (size_t i = 0; i < count; i++) {
        printf("%s%s", i ? ", " : "", name);
        name += strlen(name) + 1;
    }
    printf("\n");
    fflush(stdout);
    pthread_mutex_unlock(&out_lock);
    cartero_bytes_free(users);
}

/* Splits off the next word of *rest. */
static char *word(char **rest) {
    while (isspace((unsigned char)**rest)) (*rest)++;
    if (**rest == '\0') return NULL;
    char *start = *rest;
    while (**rest && !isspace((unsigned char)**rest)) (*rest)++;
    if (**rest) *(*rest)++ = '\0';
    return start;
}

/* Runs one command line; returns 0 when the client should end. */
static int command(char *line) {
    line[strcspn(line, "\r\n")] = '\0';
    char *rest = line;
    char *cmd = word(&rest);
    if (cmd == NULL) return 1;
    char *a = word(&rest);
    if (strcasecmp(cmd, "REGISTER") == 0 && a) {
        char *date = word(&rest);
        while (isspace((unsigned char)*rest)) rest++;
        do_register(a, date, date && *rest ? rest : NULL);
    } else if (strcasecmp(cmd, "UNREGISTER") == 0 && a) do_unregister(a);
    else if (strcasecmp(cmd, "CONNECT") == 0 && a) do_connect(a);
    else if (strcasecmp(cmd, "DISCONNECT") == 0 && a) do_disconnect(a);
    else if (strcasecmp(cmd, "SEND") == 0 && a) {
        while (isspace((unsigned char)*rest)) rest++;
        if (*rest == '\0') fprintf(stderr, "cartero-client-c: usage: SEND <alias> <message>\n");
        else if (strlen(rest) > CARTERO_MAX_FIELD_LEN) {
            fprintf(stderr, "cartero-client-c: the message has %zu bytes; at most %d fit\n", strlen(rest), CARTERO_MAX_FIELD_LEN);
            say("s> SEND FAIL");
        } else do_send(a, rest);
    } else if (strcasecmp(cmd, "SENDATTACH") == 0 && a) {
        /* SPEC 8: the file is the last word, the message what lies between (quotes dropped). */
        while (isspace((unsigned char)*rest)) rest++;
        size_t n = strlen(rest);
        while (n > 0 && isspace((unsigned char)rest[n - 1])) rest[--n] = '\0';
        char *file = strrchr(rest, ' ');
        char *tab = strrchr(rest, '\t');
        if (tab > file) file = tab;
        if (file == NULL) {
            fprintf(stderr, "cartero-client-c: usage: SENDATTACH <alias> <message> <file>\n");
            return 1;
        }
        *file++ = '\0';
        n = strlen(rest);
        while (n > 0 && isspace((unsigned char)rest[n - 1])) rest[--n] = '\0';
        if (n >= 2 && (rest[0] == '"' || rest[0] == '\'') && rest[n - 1] == rest[0]) {
            rest[n - 1] = '\0';
            rest++;
        }
        if (strlen(rest) > CARTERO_MAX_FIELD_LEN) {
            fprintf(stderr, "cartero-client-c: the message has %zu bytes; at most %d fit\n", strlen(rest), CARTERO_MAX_FIELD_LEN);
            say("s> SENDATTACH FAIL");
        } else do_send_attach(a, rest, file);
    } else if (strcasecmp(cmd, "USERS") == 0 && !a) do_users(1);
    else if (strcasecmp(cmd, "GETFILE") == 0 && a) {
        char *remote = word(&rest), *local = word(&rest);
        if (remote == NULL || local == NULL || word(&rest) != NULL)
            fprintf(stderr, "cartero-client-c: usage: GETFILE <alias> <remote file> <local file>\n");
        else do_get_file(a, remote, local);
    } else if (strcasecmp(cmd, "CONNECTEDUSERS") == 0 && !a) do_connected_users();
    else if (strcasecmp(cmd, "QUIT") == 0 && !a) {
        if (listener == NULL) return 0;
        fprintf(stderr, "cartero-client-c: QUIT refused: %s is connected; DISCONNECT %s first\n", connected, connected);
    } else fprintf(stderr, "cartero-client-c: unknown command or missing argument: %s\n", cmd);
    return 1;
}

int main(int argc, char **argv) {
    const char *host = NULL;
    int port = -1, given_listen_host = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            printf("usage: cartero-client-c -s <server> -p <port> [--course 2022|2025] [--listen-host <ip>]\n");
            return 0;
        }
    }
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "-s") == 0) host = argv[i + 1];
        else if (strcmp(argv[i], "-p") == 0) port = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--course") == 0 && strcmp(argv[i + 1], "2025") == 0) sep = ", ";
        else if (strcmp(argv[i], "--course") == 0 && strcmp(argv[i + 1], "2022") == 0) sep = " / ";
        else if (strcmp(argv[i], "--listen-host") == 0) {
            snprintf(listen_host, sizeof listen_host, "%s", argv[i + 1]);
            given_listen_host = 1;
        }
        else host = NULL, i = argc; /* unknown option: usage */
    }
    if (host == NULL || port <= 0 || port > 65535) {
        fprintf(stderr, "usage: cartero-client-c -s <server> -p <port> [--course 2022|2025] [--listen-host <ip>]\n");
        return 2;
    }
    if (!given_listen_host) address_towards(host, port);
    cartero_result r = cartero_client_new(host, (uint16_t)port, 0, &client);
    if (r != CARTERO_OK) {
        cause(r);
        return 1;
    }
    char line[4096];
    for (;;) {
        /* The prompt is printed from a pipe too, as the course's clients do. */
        fputs("c> ", stdout);
        fflush(stdout);
        if (fgets(line, sizeof line, stdin) == NULL) break;
        if (!command(line)) break;
    }
    if (listener != NULL) {
        char alias[256];
        snprintf(alias, sizeof alias, "%s", connected);
        do_disconnect(alias);
    }
    cartero_client_free(client);
    return 0;
}
