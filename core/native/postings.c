/* The metadata index's postings (pcapwire.search.index): the walk over one ECS document,
 * the grouping of a batch's postings and their B-tree order. Pure shuffling of Python
 * objects (no bytes are parsed but a value's own text); the Python statement of each is
 * in core/search/index.py (postings, _value, _Groups); tests/test_search_native.py
 * compares them on random documents, tests/fuzz/postings_check.py (fuzz_native.py, under
 * ASan) on documents made of arbitrary bytes. Python code that index_add and key_order
 * call back (other, child, ids) may run anything: every object is held while it runs.
 *
 * index_add(doc_id, body, root, other, term_groups, num_groups, max_chars) -> text | None
 *   Walks body as postings() does: each object's keys in order, through the _Node tree
 *   (root; a node's "children" memo, its "child" method on a miss, None: nothing indexed
 *   below; its "info" tuple: code, name, walk, below), objects pushed on a stack (an
 *   object's own values first, then its objects from the last to the first). Taken here: a str under a keyword field (case-folded: an ASCII
 *   value without capitals is its own fold, others go through str.casefold; cut at
 *   max_chars), a dotted IPv4 str under an ip field (inet_pton, as values.parse_ip), a
 *   date str of exactly the form documents carry (YYYY-MM-DDTHH:MM:SS.ffffffZ, a valid
 *   time), an int or float under a long field. Any other value goes to
 *   other(node, value, terms, nums, words, text), the Python code of a value (_value). A
 *   dict or list of a subclass returns None before anything is added (the caller takes the
 *   Python walk). Then each distinct (name, value) of the document gets doc_id appended in
 *   term_groups / num_groups (name -> value -> [doc ids]), and the FTS text is returned
 *   (other's text columns, then "anytext": the words joined by newlines).
 *
 * doc_time_us(value) -> int | None: a date str in the documents' own form as index_add
 *   reads it (µs since the epoch), None for anything else.
 *
 * group_add(groups, doc_id, pairs): each distinct (name, value) pair of one document gets
 *   doc_id appended (a pair twice in a document: one posting).
 *
 * key_order(groups, ids) -> list: the postings as the flat parameter list f, v, doc, ...
 *   sorted by field id, then value: ids(name) gives (field id, id of its reversed values or
 *   0), and reversed values (v[::-1]) go under that second id.
 */
#include "pcapwire_native.h"

#include <arpa/inet.h>

/* Type codes of pcapwire.search.index (_LONG, _DATE, _IP, _KEYWORD, _TEXT). */
enum { CODE_LONG = 0, CODE_DATE = 1, CODE_IP = 2, CODE_KEYWORD = 3, CODE_TEXT = 4 };

static PyObject *s_children, *s_child, *s_info, *s_casefold, *s_anytext, *s_newline,
    *s_reverse;

static int init_names(void)
{
    if (s_children)
        return 0;
#define NAME(var, text)                                                                   \
    if (!(var = PyUnicode_InternFromString(text)))                                        \
        return -1;
    NAME(s_child, "child");
    NAME(s_info, "info");
    NAME(s_casefold, "casefold");
    NAME(s_anytext, "anytext");
    NAME(s_newline, "\n");
#undef NAME
    PyObject *step = PyLong_FromLong(-1);
    s_reverse = step ? PySlice_New(NULL, NULL, step) : NULL;
    Py_XDECREF(step);
    if (!s_reverse)
        return -1;
    if (!(s_children = PyUnicode_InternFromString("children")))
        return -1;
    return 0;
}

/* ---- grouping ------------------------------------------------------------------------- */

/* groups[name][value] gets doc_id appended, unless its last id is doc_id already. The
 * dict and list are held while a value's __eq__ could run Python code. */
static int group_one(PyObject *groups, PyObject *doc_id, PyObject *name, PyObject *value)
{
    int rc = -1;
    PyObject *values = PyDict_GetItemWithError(groups, name);
    if (values) {
        Py_INCREF(values);
    } else {
        if (PyErr_Occurred())
            return -1;
        values = PyDict_New();
        if (!values || PyDict_SetItem(groups, name, values) < 0) {
            Py_XDECREF(values);
            return -1;
        }
    }
    if (!PyDict_Check(values)) {
        PyErr_SetString(PyExc_TypeError, "postings groups: name -> {value: docs} dicts");
        goto done;
    }
    PyObject *docs = PyDict_GetItemWithError(values, value);
    if (!docs) {
        if (PyErr_Occurred() || !(docs = PyList_New(1)))
            goto done;
        Py_INCREF(doc_id);
        PyList_SET_ITEM(docs, 0, doc_id);
        rc = PyDict_SetItem(values, value, docs);
        Py_DECREF(docs);
        goto done;
    }
    if (!PyList_Check(docs)) {
        PyErr_SetString(PyExc_TypeError, "postings groups: a value's documents must be a list");
        goto done;
    }
    Py_INCREF(docs);
    Py_ssize_t n = PyList_GET_SIZE(docs);
    int same = 0;
    if (n) {
        PyObject *last = PyList_GET_ITEM(docs, n - 1);
        Py_INCREF(last);
        same = PyObject_RichCompareBool(last, doc_id, Py_EQ);
        Py_DECREF(last);
    }
    rc = same < 0 ? -1 : same ? 0 : PyList_Append(docs, doc_id);
    Py_DECREF(docs);
done:
    Py_DECREF(values);
    return rc;
}

static int group_pairs(PyObject *groups, PyObject *doc_id, PyObject *pairs)
{
    PyObject *seq = PySequence_Fast(pairs, "postings: pairs must be a sequence");
    if (!seq)
        return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    PyObject **items = PySequence_Fast_ITEMS(seq);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *pair = items[i];
        if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2) {
            PyErr_SetString(PyExc_TypeError, "postings: each pair must be a (name, value) tuple");
            Py_DECREF(seq);
            return -1;
        }
        if (group_one(groups, doc_id, PyTuple_GET_ITEM(pair, 0), PyTuple_GET_ITEM(pair, 1)) < 0) {
            Py_DECREF(seq);
            return -1;
        }
    }
    Py_DECREF(seq);
    return 0;
}

static int check_groups(PyObject *groups)
{
    if (!PyDict_Check(groups)) {
        PyErr_SetString(PyExc_TypeError, "postings groups must be a dict");
        return -1;
    }
    return 0;
}

PyObject *pw_group_add(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *groups, *doc_id, *pairs;
    if (!PyArg_ParseTuple(args, "OOO:group_add", &groups, &doc_id, &pairs))
        return NULL;
    if (check_groups(groups) < 0 || group_pairs(groups, doc_id, pairs) < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* ---- the walk ------------------------------------------------------------------------- */

typedef struct {
    PyObject **items; /* strong references, taken two at a time */
    Py_ssize_t len, cap;
} objvec;

static int vec_push2(objvec *v, PyObject *a, PyObject *b)
{
    if (v->len + 2 > v->cap) {
        Py_ssize_t cap = v->cap ? v->cap * 2 : 64;
        PyObject **items = PyMem_Realloc(v->items, (size_t)cap * sizeof(PyObject *));
        if (!items) {
            PyErr_NoMemory();
            return -1;
        }
        v->items = items;
        v->cap = cap;
    }
    Py_INCREF(a);
    Py_INCREF(b);
    v->items[v->len++] = a;
    v->items[v->len++] = b;
    return 0;
}

static void vec_free(objvec *v)
{
    for (Py_ssize_t i = 0; i < v->len; i++)
        Py_DECREF(v->items[i]);
    PyMem_Free(v->items);
}

typedef struct {
    PyObject *other, *words, *text;
    PyObject *slow_terms, *slow_nums; /* what other() adds: made at its first call */
    objvec terms, nums;               /* (name, value) of the values taken here */
    Py_ssize_t max_chars;
} walk_ctx;

/* A keyword as the index keeps it: value.casefold()[:max_chars] (new reference). An ASCII
 * value without capitals is its own case fold. */
static PyObject *fold(PyObject *value, Py_ssize_t max_chars)
{
    PyObject *folded = NULL;
    if (PyUnicode_READY(value) < 0)
        return NULL;
    if (PyUnicode_IS_ASCII(value)) {
        const Py_UCS1 *p = PyUnicode_1BYTE_DATA(value);
        Py_ssize_t n = PyUnicode_GET_LENGTH(value), i = 0;
        while (i < n && !(p[i] >= 'A' && p[i] <= 'Z'))
            i++;
        if (i == n) {
            Py_INCREF(value);
            folded = value;
        }
    }
    if (!folded && !(folded = PyObject_CallMethodNoArgs(value, s_casefold)))
        return NULL;
    if (PyUnicode_Check(folded) && PyUnicode_GET_LENGTH(folded) > max_chars) {
        PyObject *cut = PyUnicode_Substring(folded, 0, max_chars);
        Py_DECREF(folded);
        return cut;
    }
    return folded;
}

/* An IPv4 address in dotted form as the index keeps it (values.parse_ip: inet_pton, 32
 * hex digits of ::ffff:a.b.c.d), new reference; Py_None (a new reference) when value is
 * not one that inet_pton takes here (other() decides). */
static PyObject *ipv4_key(PyObject *value)
{
    char buf[16];
    struct in_addr addr;
    if (PyUnicode_READY(value) < 0)
        return NULL;
    Py_ssize_t n = PyUnicode_GET_LENGTH(value);
    if (!PyUnicode_IS_ASCII(value) || n < 7 || n > 15)
        Py_RETURN_NONE;
    memcpy(buf, PyUnicode_1BYTE_DATA(value), (size_t)n);
    buf[n] = '\0';
    if (memchr(buf, '\0', (size_t)n) || inet_pton(AF_INET, buf, &addr) != 1)
        Py_RETURN_NONE;
    static const char hex[] = "0123456789abcdef";
    char out[33] = "00000000000000000000ffff";
    const unsigned char *b = (const unsigned char *)&addr.s_addr;
    for (int i = 0; i < 4; i++) {
        out[24 + 2 * i] = hex[b[i] >> 4];
        out[25 + 2 * i] = hex[b[i] & 15];
    }
    return PyUnicode_FromStringAndSize(out, 32);
}

static int digits(const Py_UCS1 *p, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return 0;
        v = v * 10 + (p[i] - '0');
    }
    *out = v;
    return 1;
}

/* Days from 1970-01-01 to a proleptic Gregorian date (H. Hinnant's days_from_civil). */
static long long days_from_civil(int y, int m, int d)
{
    y -= m <= 2;
    long long era = (y >= 0 ? y : y - 399) / 400;
    long long yoe = y - era * 400;
    long long doy = (153LL * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    long long doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

/* A date in the form documents carry, YYYY-MM-DDTHH:MM:SS.ffffffZ (values.us_iso), as
 * µs since the epoch (values.iso_us); 0 when value is not exactly that form of a valid
 * time (other() decides), 1 when *us is set. */
static int iso_us_exact(PyObject *value, long long *us)
{
    static const int mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (PyUnicode_READY(value) < 0 || !PyUnicode_IS_ASCII(value) ||
        PyUnicode_GET_LENGTH(value) != 27)
        return 0;
    const Py_UCS1 *p = PyUnicode_1BYTE_DATA(value);
    int y, mo, d, h, mi, s, f;
    if (p[4] != '-' || p[7] != '-' || p[10] != 'T' || p[13] != ':' || p[16] != ':' ||
        p[19] != '.' || p[26] != 'Z' || !digits(p, 4, &y) || !digits(p + 5, 2, &mo) ||
        !digits(p + 8, 2, &d) || !digits(p + 11, 2, &h) || !digits(p + 14, 2, &mi) ||
        !digits(p + 17, 2, &s) || !digits(p + 20, 6, &f))
        return 0;
    if (y < 1 || mo < 1 || mo > 12 || d < 1 || h > 23 || mi > 59 || s > 59)
        return 0;
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    if (d > mdays[mo - 1] + (mo == 2 && leap))
        return 0;
    *us = ((days_from_civil(y, mo, d) * 86400LL + h * 3600LL + mi * 60LL + s) * 1000000LL) + f;
    return 1;
}

PyObject *pw_doc_time_us(PyObject *self, PyObject *value)
{
    (void)self;
    long long us;
    if (PyUnicode_CheckExact(value) && iso_us_exact(value, &us))
        return PyLong_FromLongLong(us);
    if (PyErr_Occurred())
        return NULL;
    Py_RETURN_NONE;
}

/* other(sub, value, terms, nums, words, text): the Python code of a value. */
static int call_other(walk_ctx *c, PyObject *sub, PyObject *value)
{
    if (!c->slow_terms && !(c->slow_terms = PyList_New(0)))
        return -1;
    if (!c->slow_nums && !(c->slow_nums = PyList_New(0)))
        return -1;
    PyObject *argv[6] = {sub, value, c->slow_terms, c->slow_nums, c->words, c->text};
    PyObject *res = PyObject_Vectorcall(c->other, argv, 6, NULL);
    if (!res)
        return -1;
    Py_DECREF(res);
    return 0;
}

/* What the walk reads of a node: its info tuple (code, name, walk, below), held. */
typedef struct {
    PyObject *tuple; /* a strong reference; name is one of its items */
    int code;        /* -1: None (a prefix of fields, not a field) */
    PyObject *name;
    int walk, below;
} node_info;

static int info_of(PyObject *node, node_info *out)
{
    PyObject *info = PyObject_GetAttr(node, s_info);
    if (!info)
        return -1;
    if (!PyTuple_CheckExact(info) || PyTuple_GET_SIZE(info) != 4) {
        Py_DECREF(info);
        PyErr_SetString(PyExc_TypeError, "postings: a node's info must be (code, name, walk, below)");
        return -1;
    }
    long code = PyLong_AsLong(PyTuple_GET_ITEM(info, 0));
    int walk = PyObject_IsTrue(PyTuple_GET_ITEM(info, 2));
    int below = PyObject_IsTrue(PyTuple_GET_ITEM(info, 3));
    out->tuple = info;
    out->name = PyTuple_GET_ITEM(info, 1);
    if ((code == -1 && PyErr_Occurred()) || walk < 0 || below < 0) {
        Py_DECREF(info);
        return -1;
    }
    out->code = (int)code;
    out->walk = walk;
    out->below = below;
    return 0;
}

/* Add (name, key) to vec; steals key. */
static int add_named(objvec *vec, node_info *sub, PyObject *key)
{
    if (!key)
        return -1;
    int rc = vec_push2(vec, sub->name, key);
    Py_DECREF(key);
    return rc;
}

/* One value that is not an object (the per-value loop of postings()): 0 or -1. */
static int take_value(walk_ctx *c, PyObject *sub, node_info *info, PyObject *value)
{
    int code = info->code;
    if (PyUnicode_CheckExact(value)) {
        if (code == CODE_KEYWORD) {
            if (add_named(&c->terms, info, fold(value, c->max_chars)) < 0)
                return -1;
            return PyList_Append(c->words, value);
        }
        if (code == CODE_IP) {
            PyObject *key = ipv4_key(value);
            if (!key)
                return -1;
            if (key != Py_None) {
                if (add_named(&c->terms, info, key) < 0)
                    return -1;
                return PyList_Append(c->words, value);
            }
            Py_DECREF(key);
        } else if (code == CODE_DATE) {
            long long us;
            if (iso_us_exact(value, &us))
                return add_named(&c->nums, info, PyLong_FromLongLong(us));
        }
    } else if (code == CODE_LONG && PyLong_CheckExact(value)) {
        Py_INCREF(value);
        return add_named(&c->nums, info, value);
    } else if (code == CODE_LONG && PyFloat_CheckExact(value)) {
        return add_named(&c->nums, info, PyNumber_Long(value));
    }
    return call_other(c, sub, value);
}

/* The node of key under node, whose memo is children (new reference; Py_None: nothing
 * indexed below it). */
static PyObject *child_of(PyObject *node, PyObject *children, PyObject *key)
{
    PyObject *sub = PyDict_GetItemWithError(children, key);
    if (sub) {
        Py_INCREF(sub);
        return sub;
    }
    if (PyErr_Occurred())
        return NULL;
    return PyObject_CallMethodOneArg(node, s_child, key);
}

/* One key's value under node sub (code): 0, 1 = a container of a subclass met, -1. */
static int take(walk_ctx *c, objvec *stack, PyObject *sub, node_info *info, PyObject *v)
{
    if (PyDict_Check(v)) {
        if (!PyDict_CheckExact(v))
            return 1;
        return info->walk ? vec_push2(stack, sub, v) : 0;
    }
    if (!PyList_Check(v))
        return v == Py_None ? 0 : take_value(c, sub, info, v);
    if (!PyList_CheckExact(v))
        return 1;
    int rc = 0;
    /* by index: other() may (pathologically) change the list */
    for (Py_ssize_t i = 0; rc == 0 && i < PyList_GET_SIZE(v); i++) {
        PyObject *item = PyList_GET_ITEM(v, i);
        Py_INCREF(item);
        if (PyDict_Check(item)) {
            if (!PyDict_CheckExact(item))
                rc = 1;
            else
                rc = info->below ? vec_push2(stack, sub, item) : 0;
        } else if (item != Py_None) {
            rc = take_value(c, sub, info, item);
        }
        Py_DECREF(item);
    }
    return rc;
}

/* The walk of one document: 0, 1 = a container of a subclass met, -1 on error. */
static int walk(walk_ctx *c, PyObject *body, PyObject *root)
{
    if (!PyDict_CheckExact(body))
        return 1;
    objvec stack = {NULL, 0, 0};
    int rc = vec_push2(&stack, root, body);
    while (stack.len && rc == 0) {
        PyObject *obj = stack.items[--stack.len];
        PyObject *node = stack.items[--stack.len];
        PyObject *children = PyObject_GetAttr(node, s_children);
        if (!children || !PyDict_Check(children)) {
            if (children)
                PyErr_SetString(PyExc_TypeError, "postings: a node's children must be a dict");
            rc = -1;
        }
        Py_ssize_t pos = 0;
        PyObject *key, *v;
        while (rc == 0 && PyDict_Next(obj, &pos, &key, &v)) {
            Py_INCREF(key);
            Py_INCREF(v);
            PyObject *sub = child_of(node, children, key);
            if (!sub) {
                rc = -1;
            } else if (sub != Py_None) {
                node_info info;
                if (info_of(sub, &info) < 0) {
                    rc = -1;
                } else {
                    rc = take(c, &stack, sub, &info, v);
                    Py_DECREF(info.tuple);
                }
            }
            Py_XDECREF(sub);
            Py_DECREF(key);
            Py_DECREF(v);
        }
        Py_XDECREF(children);
        Py_DECREF(node);
        Py_DECREF(obj);
    }
    vec_free(&stack);
    return rc;
}

static int group_vec(PyObject *groups, PyObject *doc_id, objvec *vec)
{
    for (Py_ssize_t i = 0; i < vec->len; i += 2)
        if (group_one(groups, doc_id, vec->items[i], vec->items[i + 1]) < 0)
            return -1;
    return 0;
}

PyObject *pw_index_add(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *doc_id, *body, *root, *term_groups, *num_groups, *out = NULL;
    walk_ctx c = {0};
    if (!PyArg_ParseTuple(args, "OOOOOOn:index_add", &doc_id, &body, &root, &c.other,
                          &term_groups, &num_groups, &c.max_chars))
        return NULL;
    if (init_names() < 0 || check_groups(term_groups) < 0 || check_groups(num_groups) < 0)
        return NULL;
    if (c.max_chars < 0) {
        PyErr_SetString(PyExc_ValueError, "index_add: max_chars must be >= 0");
        return NULL;
    }
    c.words = PyList_New(0);
    c.text = PyDict_New();
    if (!c.words || !c.text)
        goto done;
    int rc = walk(&c, body, root);
    if (rc < 0)
        goto done;
    if (rc == 1) {
        out = Py_None;
        Py_INCREF(out);
        goto done;
    }
    PyObject *any = PyUnicode_Join(s_newline, c.words);
    if (!any)
        goto done;
    rc = PyDict_SetItem(c.text, s_anytext, any);
    Py_DECREF(any);
    if (rc < 0 || group_vec(term_groups, doc_id, &c.terms) < 0 ||
        group_vec(num_groups, doc_id, &c.nums) < 0 ||
        (c.slow_terms && group_pairs(term_groups, doc_id, c.slow_terms) < 0) ||
        (c.slow_nums && group_pairs(num_groups, doc_id, c.slow_nums) < 0))
        goto done;
    out = c.text;
    Py_INCREF(out);
done:
    vec_free(&c.terms);
    vec_free(&c.nums);
    Py_XDECREF(c.slow_terms);
    Py_XDECREF(c.slow_nums);
    Py_XDECREF(c.words);
    Py_XDECREF(c.text);
    return out;
}

/* ---- B-tree order --------------------------------------------------------------------- */

typedef struct {
    long long fid;
    PyObject *values; /* value -> docs (a strong reference: ids() may change groups) */
    int reversed;
} field_part;

static int cmp_part(const void *a, const void *b)
{
    long long x = ((const field_part *)a)->fid, y = ((const field_part *)b)->fid;
    return (x > y) - (x < y);
}

/* (value, docs) of one field part, sorted by value (new list of 2-tuples). */
static PyObject *sorted_values(field_part *part)
{
    PyObject *rows = PyList_New(0);
    if (!rows)
        return NULL;
    Py_ssize_t pos = 0;
    PyObject *v, *docs;
    while (PyDict_Next(part->values, &pos, &v, &docs)) {
        PyObject *key = part->reversed ? PyObject_GetItem(v, s_reverse) : (Py_INCREF(v), v);
        if (!key)
            goto fail;
        PyObject *row = PyTuple_Pack(2, key, docs);
        Py_DECREF(key);
        if (!row || PyList_Append(rows, row) < 0) {
            Py_XDECREF(row);
            goto fail;
        }
        Py_DECREF(row);
    }
    if (PyList_Sort(rows) < 0)
        goto fail;
    return rows;
fail:
    Py_DECREF(rows);
    return NULL;
}

PyObject *pw_key_order(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *groups, *ids;
    if (!PyArg_ParseTuple(args, "OO:key_order", &groups, &ids))
        return NULL;
    if (init_names() < 0 || check_groups(groups) < 0)
        return NULL;
    Py_ssize_t nparts = 0, cap = 2 * PyDict_GET_SIZE(groups) + 1, total = 0;
    field_part *parts = PyMem_Malloc((size_t)cap * sizeof(field_part));
    PyObject *flat = NULL, *name, *values;
    if (!parts)
        return PyErr_NoMemory();
    Py_ssize_t pos = 0;
    while (PyDict_Next(groups, &pos, &name, &values)) {
        if (nparts + 2 > cap || !PyDict_Check(values)) {
            PyErr_SetString(nparts + 2 > cap ? PyExc_RuntimeError : PyExc_TypeError,
                            nparts + 2 > cap ? "postings groups changed during key_order"
                                             : "postings groups: name -> {value: docs} dicts");
            goto done;
        }
        Py_INCREF(name);
        Py_INCREF(values);
        PyObject *pair = PyObject_CallOneArg(ids, name);
        Py_DECREF(name);
        long long fid, rid;
        if (!pair || !PyTuple_Check(pair) ||
            !PyArg_ParseTuple(pair, "LL;ids() must give (field id, reversed id)", &fid, &rid)) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_TypeError, "ids() must give (field id, reversed id)");
            Py_XDECREF(pair);
            Py_DECREF(values);
            goto done;
        }
        Py_DECREF(pair);
        parts[nparts++] = (field_part){fid, values, 0};
        if (rid) {
            Py_INCREF(values);
            parts[nparts++] = (field_part){rid, values, 1};
        }
    }
    for (Py_ssize_t i = 0; i < nparts; i++) { /* no Python code runs here */
        Py_ssize_t p = 0;
        PyObject *v, *docs;
        while (PyDict_Next(parts[i].values, &p, &v, &docs)) {
            if (!PyList_Check(docs)) {
                PyErr_SetString(PyExc_TypeError,
                                "postings groups: a value's documents must be a list");
                goto done;
            }
            total += PyList_GET_SIZE(docs);
        }
    }
    qsort(parts, (size_t)nparts, sizeof(field_part), cmp_part);
    flat = PyList_New(3 * total);
    if (!flat)
        goto done;
    Py_ssize_t at = 0;
    for (Py_ssize_t i = 0; i < nparts; i++) {
        PyObject *fid = PyLong_FromLongLong(parts[i].fid);
        PyObject *rows = fid ? sorted_values(&parts[i]) : NULL;
        if (!rows) {
            Py_XDECREF(fid);
            Py_CLEAR(flat);
            goto done;
        }
        for (Py_ssize_t r = 0; r < PyList_GET_SIZE(rows); r++) {
            PyObject *row = PyList_GET_ITEM(rows, r);
            PyObject *v = PyTuple_GET_ITEM(row, 0), *docs = PyTuple_GET_ITEM(row, 1);
            for (Py_ssize_t d = 0; d < PyList_GET_SIZE(docs) && at + 3 <= 3 * total; d++) {
                PyObject *doc = PyList_GET_ITEM(docs, d);
                Py_INCREF(fid);
                Py_INCREF(v);
                Py_INCREF(doc);
                PyList_SET_ITEM(flat, at, fid);
                PyList_SET_ITEM(flat, at + 1, v);
                PyList_SET_ITEM(flat, at + 2, doc);
                at += 3;
            }
        }
        Py_DECREF(rows);
        Py_DECREF(fid);
    }
    if (at != 3 * total) {
        PyErr_SetString(PyExc_RuntimeError, "postings groups changed during key_order");
        Py_CLEAR(flat);
    }
done:
    for (Py_ssize_t i = 0; i < nparts; i++)
        Py_DECREF(parts[i].values);
    PyMem_Free(parts);
    return flat;
}
