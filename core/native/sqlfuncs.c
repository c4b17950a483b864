/* SQL functions in C for the SQLite connections pcapwire opens (pcapwire.triggers.ip_walk).
 *
 * sqlite_functions() registers them with sqlite3_auto_extension(): every connection the
 * process opens afterwards has them, when Python's sqlite3 module uses the same shared
 * libsqlite3 as this module (Debian's Python and a Python built against the system
 * library do; one that links SQLite statically does not, and its connections lack them:
 * the caller checks, see ip_walk). A C function runs without taking the interpreter's lock,
 * so threads running SQL that calls it do not wait on each other.
 *
 * pcapwire_ip_text(ipver, addr): the text of an address as the flow index stores it (16
 * bytes, IPv4 in the first four): as socket.inet_ntop writes it (IPv4: dotted decimal
 * without leading zeros; IPv6: glibc's inet_ntop), '' for a version that is not 4 or 6
 * (flows that are not IP), NULL for a NULL address; an error for an address too short for
 * its version (IPv4: fewer than 4 bytes; IPv6: not 16), as the Python form raises. */
#include "pcapwire_native.h"

#include <arpa/inet.h>
#include <sqlite3.h>

static void ip_text(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    (void)argc;
    if (sqlite3_value_type(argv[1]) == SQLITE_NULL) {
        sqlite3_result_null(ctx);
        return;
    }
    sqlite3_int64 version = sqlite3_value_int64(argv[0]);
    const unsigned char *b = sqlite3_value_blob(argv[1]);
    int n = sqlite3_value_bytes(argv[1]);
    char out[INET6_ADDRSTRLEN];
    if (version == 4) {
        if (n < 4) {
            sqlite3_result_error(ctx, "pcapwire_ip_text: an IPv4 address needs 4 bytes", -1);
            return;
        }
        char *p = out;
        for (int i = 0; i < 4; i++) {
            unsigned v = b[i];
            if (v >= 100)
                *p++ = (char)('0' + v / 100);
            if (v >= 10)
                *p++ = (char)('0' + v / 10 % 10);
            *p++ = (char)('0' + v % 10);
            if (i < 3)
                *p++ = '.';
        }
        sqlite3_result_text(ctx, out, (int)(p - out), SQLITE_TRANSIENT);
    } else if (version == 6) {
        if (n != 16 || !inet_ntop(AF_INET6, b, out, sizeof out)) {
            sqlite3_result_error(ctx, "pcapwire_ip_text: an IPv6 address needs 16 bytes", -1);
            return;
        }
        sqlite3_result_text(ctx, out, -1, SQLITE_TRANSIENT);
    } else {
        sqlite3_result_text(ctx, "", 0, SQLITE_STATIC);
    }
}

static int register_functions(sqlite3 *db, char **err, const void *api)
{
    (void)err;
    (void)api;
    return sqlite3_create_function_v2(db, "pcapwire_ip_text", 2,
                                      SQLITE_UTF8 | SQLITE_DETERMINISTIC | SQLITE_INNOCUOUS,
                                      NULL, ip_text, NULL, NULL, NULL);
}

PyObject *pw_sqlite_functions(PyObject *self, PyObject *unused)
{
    (void)self;
    (void)unused;
    /* registering the same entry point again is a no-op */
    int rc = sqlite3_auto_extension((void (*)(void))register_functions);
    if (rc != SQLITE_OK) {
        PyErr_Format(PyExc_RuntimeError, "sqlite3_auto_extension: %s", sqlite3_errstr(rc));
        return NULL;
    }
    Py_RETURN_NONE;
}
