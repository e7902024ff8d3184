/*
 * The course's console client (SPEC 6) in C, on cartero's blocking client and listener.
 * Same commands and output lines as `cartero client`; causes of failures go to stderr.
 *
 *   cc -Wall -Wextra -Iinclude examples/c/client.c target/release/libcartero.a \
 *      -lpthread -ldl -lm -lrt -lutil -o cartero-client-c
 *   ./cartero-client-c -s localhost -p 8888
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "cartero.h"

static pthread_mutex_t out_lock = PTHREAD_MUTEX_INITIALIZER;
static cartero_client *client;
static char user[256];          /* the alias last registered or connected: SEND's sender */
static char connected[256];     /* the alias connected from here, "" if none */
static cartero_listener *listener;
static pthread_t printer;
static volatile int stop_printer;

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
        pthread_mutex_lock(&out_lock);
        if (cartero_push_is_ack(p)) printf("s> SEND MESSAGE %u OK\n", cartero_push_id(p));
        else printf("s> MESSAGE %u FROM %s\n   %s\n   END\n", cartero_push_id(p), cartero_push_sender(p), cartero_push_body(p));
        fflush(stdout);
        pthread_mutex_unlock(&out_lock);
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
    if (r != CARTERO_OK) {
        cause(r);
        say("s> REGISTER FAIL");
        return;
    }
    if (code == 0) snprintf(user, sizeof user, "%s", alias);
    say(code == 0 ? "s> REGISTER OK" : code == 1 ? "s> USERNAME IN USE" : "s> REGISTER FAIL");
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
        say("s> CONNECT FAIL");
        return;
    }
    cartero_result r = cartero_listener_new("0.0.0.0", &listener);
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
    say(r != CARTERO_OK ? "s> DISCONNECT FAIL"
        : code == 0     ? "s> DISCONNECT OK"
        : code == 1     ? "s> DISCONNECT FAIL / USER DOES NOT EXIST"
        : code == 2     ? "s> DISCONNECT FAIL / USER NOT CONNECTED"
                        : "s> DISCONNECT FAIL");
}

static void do_send(char *recipient, char *body) {
    if (user[0] == '\0') {
        fprintf(stderr, "cartero-client-c: SEND needs a user: REGISTER or CONNECT first\n");
        say("s> SEND FAIL");
        return;
    }
    uint8_t code;
    uint32_t id = 0;
    cartero_result r = cartero_client_send(client, user, recipient, body, &code, &id);
    if (r != CARTERO_OK) {
        cause(r);
        say("s> SEND FAIL");
        return;
    }
    char line[64];
    snprintf(line, sizeof line, "s> SEND OK - MESSAGE %u", id);
    say(code == 0 ? line : code == 1 ? "s> SEND FAIL / USER DOES NOT EXIST" : "s> SEND FAIL");
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
        say(code == 1 ? "s> CONNECTED USERS FAIL / USER IS NOT CONNECTED" : "s> CONNECTED USERS FAIL");
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
    } else if (strcasecmp(cmd, "CONNECTEDUSERS") == 0 && !a) do_connected_users();
    else if (strcasecmp(cmd, "QUIT") == 0 && !a) {
        if (listener == NULL) return 0;
        fprintf(stderr, "cartero-client-c: QUIT refused: %s is connected; DISCONNECT %s first\n", connected, connected);
    } else fprintf(stderr, "cartero-client-c: unknown command or missing argument: %s\n", cmd);
    return 1;
}

int main(int argc, char **argv) {
    const char *host = NULL;
    int port = -1;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "-s") == 0) host = argv[i + 1];
        else if (strcmp(argv[i], "-p") == 0) port = atoi(argv[i + 1]);
    }
    if (host == NULL || port <= 0 || port > 65535) {
        fprintf(stderr, "usage: cartero-client-c -s <server> -p <port>\n");
        return 2;
    }
    cartero_result r = cartero_client_new(host, (uint16_t)port, 0, &client);
    if (r != CARTERO_OK) {
        cause(r);
        return 1;
    }
    int tty = isatty(STDIN_FILENO);
    char line[4096];
    for (;;) {
        if (tty) {
            fputs("c> ", stdout);
            fflush(stdout);
        }
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
