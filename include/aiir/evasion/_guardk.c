/* The inline guard's per-row arithmetic in C: an optional accelerator of Guard._rows_fn's generated function.

   rows(rows, idx, params, d, m, off, radix) -> None | False | (zs, keys, slow, between)
   grid(...) -> (i, seq, added): the grid bookkeeping of rows without a near-duplicate candidate (below)
   cells(n) -> Cells: an empty grid generation sized for n keys (the Cells type, above grid())

   The same IEEE double operations in the same order as the generated Python function (built with
   -ffp-contract=off: no fused multiply-add; x86-64 SSE2 doubles): z_k = (x - mean_k) * stdinv_k;
   n2 = ((z_0 z_0 + z_1 z_1) + z_2 z_2) + ...; h_j = ((c_0j z_0 + c_1j z_1) + ...) with a projection, else z;
   f_j = floor(h_j * s3); grid g's key = sum_j ((f_j + off + g) // 3) * radix**j, as an int (the tables' float
   sum has the same value: an equal dict key).

   Returns None when a value is not an exact float, int or bool (or an int too large for a double, or a row too
   short): the Python function then decides (conversions, errors). False when a row's n2 is not finite (the
   Python function returns None there: the request is not scored). Otherwise row i's results as the Python
   function's (z, k0, k1, k2, ood bit), in two objects for the request (no tuple and no int per row): zs[i] = z, a
   bytes object of the d doubles (-0.0 as 0.0: Guard._kernel), and keys, a bytearray of 4 int64 per row: k0, k1, k2,
   the bit. Except the rows listed in `slow` (n2 at or past the tables' bound: zs[i] is None and its keys 0, the
   Python function computes the row) and in `between` (n2 between the outlier model's eigenvalue bounds: its bit
   is 0, the caller decides it with the quadratic form); Guard._kernel fills both in.

   params (doubles): mean[d], stdinv[d], proj[d * m] (k-major: coefficient of z_k in h_j at k * m + j; absent
   when m == d without a projection), s3, nb, lo, hi. idx: the features' positions (Py_ssize_t each). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <string.h>

#define MAXD 64 /* the most features a row may have here (module constant MAXD): guard.py uses Python past it */

static int value(PyObject *v, double *x)
{
    if (PyFloat_CheckExact(v)) {
        *x = PyFloat_AS_DOUBLE(v);
        return 1;
    }
    if (PyLong_CheckExact(v) || PyBool_Check(v)) {
        double r = PyLong_AsDouble(v);
        if (r == -1.0 && PyErr_Occurred()) {
            PyErr_Clear();
            return 0;
        }
        *x = r;
        return 1;
    }
    return 0;
}

static PyObject *rows(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    if (nargs != 7 || !PyList_Check(args[0]) || !PyBytes_Check(args[1]) || !PyBytes_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "rows(rows: list, idx: bytes, params: bytes, d, m, off, radix)");
        return NULL;
    }
    PyObject *rl = args[0];
    Py_ssize_t d = PyLong_AsSsize_t(args[3]), m = PyLong_AsSsize_t(args[4]);
    long long off = PyLong_AsLongLong(args[5]), radix = PyLong_AsLongLong(args[6]);
    if (PyErr_Occurred())
        return NULL;
    int proj = m != d;
    if (d < 1 || m < 1 || d > MAXD || m > MAXD || off < 1 || radix < 1
        || PyBytes_GET_SIZE(args[1]) != (Py_ssize_t)(d * sizeof(Py_ssize_t))
        || PyBytes_GET_SIZE(args[2]) != (Py_ssize_t)((2 * d + (proj ? d * m : 0) + 4) * sizeof(double))) {
        PyErr_SetString(PyExc_ValueError, "rows: inconsistent layout");
        return NULL;
    }
    const Py_ssize_t *idx = (const Py_ssize_t *)PyBytes_AS_STRING(args[1]);
    const double *mean = (const double *)PyBytes_AS_STRING(args[2]);
    const double *sinv = mean + d, *c = sinv + d, *tail = c + (proj ? d * m : 0);
    const double s3 = tail[0], nb = tail[1], lo = tail[2], hi = tail[3];
    long long w[MAXD];
    w[0] = 1;
    for (Py_ssize_t j = 1; j < m; j++)
        w[j] = w[j - 1] * radix;

    Py_ssize_t n = PyList_GET_SIZE(rl);
    PyObject *out = PyList_New(n), *slow = PyList_New(0), *between = PyList_New(0);
    PyObject *keys = PyByteArray_FromStringAndSize(NULL, (Py_ssize_t)(n * 4 * sizeof(long long)));
    if (out == NULL || slow == NULL || between == NULL || keys == NULL)
        goto fail;
    long long *kb = (long long *)PyByteArray_AS_STRING(keys);
    double z[MAXD], h[MAXD];
    for (Py_ssize_t i = 0; i < n; i++) {
        if (PyList_GET_SIZE(rl) != n) /* changed under us (a finaliser run by an allocation) */
            goto python;
        PyObject *r = PyList_GET_ITEM(rl, i), **items;
        Py_ssize_t len;
        if (PyList_CheckExact(r)) {
            items = ((PyListObject *)r)->ob_item;
            len = PyList_GET_SIZE(r);
        } else if (PyTuple_CheckExact(r)) {
            items = ((PyTupleObject *)r)->ob_item;
            len = PyTuple_GET_SIZE(r);
        } else {
            goto python;
        }
        for (Py_ssize_t k = 0; k < d; k++) {
            double x;
            if (idx[k] < 0 || idx[k] >= len || !value(items[idx[k]], &x))
                goto python;
            z[k] = (x - mean[k]) * sinv[k];
        }
        double n2 = z[0] * z[0];
        for (Py_ssize_t k = 1; k < d; k++)
            n2 = n2 + z[k] * z[k];
        if (!(n2 - n2 == 0.0)) { /* NaN or infinite */
            Py_DECREF(out);
            Py_DECREF(keys);
            Py_DECREF(slow);
            Py_DECREF(between);
            Py_RETURN_FALSE;
        }
        long long k0 = 0, k1 = 0, k2 = 0;
        int far = !(n2 < nb);
        if (!far) {
            if (proj) {
                for (Py_ssize_t j = 0; j < m; j++) {
                    double a = c[j] * z[0];
                    for (Py_ssize_t k = 1; k < d; k++)
                        a = a + c[k * m + j] * z[k];
                    h[j] = a;
                }
            } else {
                for (Py_ssize_t j = 0; j < m; j++)
                    h[j] = z[j];
            }
            for (Py_ssize_t j = 0; j < m; j++) {
                double f = floor(h[j] * s3);
                if (!(f >= (double)-off && f < (double)off)) { /* cannot happen below nb: the Python function */
                    far = 1;
                    break;
                }
                long long g = (long long)f + off;
                k0 += g / 3 * w[j];
                k1 += (g + 1) / 3 * w[j];
                k2 += (g + 2) / 3 * w[j];
            }
        }
        if (far) {
            PyObject *ix = PyLong_FromSsize_t(i);
            if (ix == NULL || PyList_Append(slow, ix) < 0) {
                Py_XDECREF(ix);
                goto fail;
            }
            Py_DECREF(ix);
            Py_INCREF(Py_None);
            PyList_SET_ITEM(out, i, Py_None);
            kb[4 * i] = kb[4 * i + 1] = kb[4 * i + 2] = kb[4 * i + 3] = 0;
            continue;
        }
        long bit = 0;
        if (n2 > lo) {
            if (n2 > hi) {
                bit = 8;
            } else {
                PyObject *ix = PyLong_FromSsize_t(i);
                if (ix == NULL || PyList_Append(between, ix) < 0) {
                    Py_XDECREF(ix);
                    goto fail;
                }
                Py_DECREF(ix);
            }
        }
        /* z as d native doubles in one bytes object (one allocation for the entry's life, not a tuple and d
           floats); + 0.0 makes a -0.0 +0.0, so two z's bytes are equal exactly when their values are (no NaN here) */
        for (Py_ssize_t k = 0; k < d; k++)
            z[k] = z[k] + 0.0;
        PyObject *zt = PyBytes_FromStringAndSize((const char *)z, (Py_ssize_t)(d * sizeof(double)));
        if (zt == NULL)
            goto fail;
        PyList_SET_ITEM(out, i, zt);
        kb[4 * i] = k0;
        kb[4 * i + 1] = k1;
        kb[4 * i + 2] = k2;
        kb[4 * i + 3] = bit;
    }
    PyObject *res = PyTuple_Pack(4, out, keys, slow, between);
    Py_DECREF(out);
    Py_DECREF(keys);
    Py_DECREF(slow);
    Py_DECREF(between);
    return res;

python: /* not plain numbers: the Python function decides */
    Py_DECREF(out);
    Py_DECREF(keys);
    Py_DECREF(slow);
    Py_DECREF(between);
    Py_RETURN_NONE;

fail:
    Py_XDECREF(out);
    Py_XDECREF(keys);
    Py_XDECREF(slow);
    Py_XDECREF(between);
    return NULL;
}

/* ----------------------------------------------------------------------------------------------------------
   Cells: one grid generation's cells, a hash table owned by this module (Guard._rotate makes them with cells(n)).
   A cell key is an int64 (the kernel's keys: non-negative ints below 2**60; the Python paths': the same numbers as
   integral floats, or hash(tuple) past the key tables); its value the cell's one entry or its list of entries.
   To Python it is a mapping with dict's semantics for these keys (Guard._rows and _push use it as they use a
   dict: setdefault, get, [k], [k] = v, len, items/keys/values; 3 and 3.0 are one key), and any other key (an int
   past int64, a non-integral float, another type: never made by the guard) goes to a dict of its own, so the
   mapping stays a dict for every key. Cells are not deleted (the guard never deletes one: a generation is
   dropped whole). grid() reads and writes the table directly: no int object per key and no dict probe.
   Not tracked by the cyclic collector, as the dicts were (see grid()): no cycle can pass through a cell. */
typedef struct {
    PyObject_HEAD
    Py_ssize_t used, mask; /* filled slots; capacity - 1 (a power of two, at most half full) */
    long long *keys;
    PyObject **vals; /* NULL: an empty slot (owned references otherwise) */
    PyObject *extra; /* NULL, or a dict of the keys that are not int64 */
} CellsObject;

static PyTypeObject CellsType;

static inline Py_ssize_t slot(const CellsObject *c, long long k)
{
    /* the slot holding k, or the empty slot where it goes (linear probing; never full). The keys are structured
       (sums of cell indices times powers of 409: many share their low bits), so every bit is mixed into the slot
       (splitmix64's finaliser): ~1.4 probes per look-up at the tables' load (at most one half) */
    unsigned long long h = (unsigned long long)k;
    h = (h ^ (h >> 30)) * 0xBF58476D1CE4E5B9ULL;
    h = (h ^ (h >> 27)) * 0x94D049BB133111EBULL;
    Py_ssize_t i = (Py_ssize_t)((h ^ (h >> 31)) & (unsigned long long)c->mask);
    while (c->vals[i] != NULL && c->keys[i] != k)
        i = (i + 1) & c->mask;
    return i;
}

static int table_alloc(CellsObject *c, Py_ssize_t cap)
{
    c->keys = PyMem_Malloc((size_t)cap * sizeof(long long));
    c->vals = PyMem_Calloc((size_t)cap, sizeof(PyObject *));
    if (c->keys == NULL || c->vals == NULL) {
        PyMem_Free(c->keys);
        PyMem_Free(c->vals);
        c->keys = NULL;
        c->vals = NULL;
        PyErr_NoMemory();
        return -1;
    }
    c->mask = cap - 1;
    return 0;
}

static int grow(CellsObject *c)
{
    long long *ok = c->keys;
    PyObject **ov = c->vals;
    Py_ssize_t ocap = c->mask + 1;
    if (table_alloc(c, 2 * ocap) < 0) {
        c->keys = ok;
        c->vals = ov;
        c->mask = ocap - 1;
        return -1;
    }
    for (Py_ssize_t j = 0; j < ocap; j++)
        if (ov[j] != NULL) {
            Py_ssize_t i = slot(c, ok[j]);
            c->keys[i] = ok[j];
            c->vals[i] = ov[j];
        }
    PyMem_Free(ok);
    PyMem_Free(ov);
    return 0;
}

static PyObject *cget(const CellsObject *c, long long k)
{
    return c->vals[slot(c, k)]; /* borrowed, or NULL */
}

static int cput(CellsObject *c, Py_ssize_t i, long long k, PyObject *v)
{
    /* c[k] = v, where i = slot(c, k) found by the caller (no second probe) */
    Py_INCREF(v);
    if (c->vals[i] != NULL) {
        Py_SETREF(c->vals[i], v);
        return 0;
    }
    if (2 * (c->used + 1) > c->mask + 1) {
        if (grow(c) < 0) {
            Py_DECREF(v);
            return -1;
        }
        i = slot(c, k);
    }
    c->keys[i] = k;
    c->vals[i] = v;
    c->used++;
    return 0;
}

static int cset(CellsObject *c, long long k, PyObject *v)
{
    return cput(c, slot(c, k), k, v);
}

static int ckey(PyObject *k, long long *out)
{
    /* 1: k as an int64 cell key (ints, and floats of an integral value: dict's equal keys); 0: another key (the
       extra dict); -1: an error */
    if (PyLong_Check(k)) {
        int ovf;
        long long v = PyLong_AsLongLongAndOverflow(k, &ovf);
        if (v == -1 && PyErr_Occurred())
            return -1;
        if (ovf)
            return 0;
        *out = v;
        return 1;
    }
    if (PyFloat_Check(k)) {
        double d = PyFloat_AS_DOUBLE(k);
        if (d == floor(d) && d >= -9223372036854775808.0 && d < 9223372036854775808.0) {
            *out = (long long)d;
            return 1;
        }
    }
    return 0;
}

static PyObject *extra_dict(CellsObject *c)
{
    if (c->extra == NULL)
        c->extra = PyDict_New();
    return c->extra;
}

static PyObject *cells_lookup(CellsObject *c, PyObject *k)
{
    /* borrowed value or NULL (an error set, or none: not found) */
    long long v;
    int r = ckey(k, &v);
    if (r < 0)
        return NULL;
    if (r)
        return cget(c, v);
    if (c->extra == NULL) {
        (void)PyObject_Hash(k); /* not found; an unhashable key raises, as dict's look-up would */
        return NULL;
    }
    return PyDict_GetItemWithError(c->extra, k);
}

static int cells_store(CellsObject *c, PyObject *k, PyObject *v)
{
    long long x;
    int r = ckey(k, &x);
    if (r < 0)
        return -1;
    if (r)
        return cset(c, x, v);
    PyObject *e = extra_dict(c);
    return e == NULL ? -1 : PyDict_SetItem(e, k, v);
}

static PyObject *Cells_get(CellsObject *c, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 1 || nargs > 2) {
        PyErr_SetString(PyExc_TypeError, "get(key, default=None)");
        return NULL;
    }
    PyObject *v = cells_lookup(c, args[0]);
    if (v == NULL) {
        if (PyErr_Occurred())
            return NULL;
        v = nargs > 1 ? args[1] : Py_None;
    }
    return Py_NewRef(v);
}

static PyObject *Cells_setdefault(CellsObject *c, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 1 || nargs > 2) {
        PyErr_SetString(PyExc_TypeError, "setdefault(key, default=None)");
        return NULL;
    }
    PyObject *dflt = nargs > 1 ? args[1] : Py_None;
    long long x;
    int r = ckey(args[0], &x);
    if (r < 0)
        return NULL;
    if (!r) {
        PyObject *e = extra_dict(c);
        return e == NULL ? NULL : Py_XNewRef(PyDict_SetDefault(e, args[0], dflt));
    }
    Py_ssize_t i = slot(c, x);
    if (c->vals[i] != NULL)
        return Py_NewRef(c->vals[i]);
    if (cput(c, i, x, dflt) < 0)
        return NULL;
    return Py_NewRef(dflt);
}

static PyObject *Cells_subscript(CellsObject *c, PyObject *k)
{
    PyObject *v = cells_lookup(c, k);
    if (v == NULL) {
        if (!PyErr_Occurred())
            PyErr_SetObject(PyExc_KeyError, k);
        return NULL;
    }
    return Py_NewRef(v);
}

static int Cells_ass_subscript(CellsObject *c, PyObject *k, PyObject *v)
{
    if (v == NULL) {
        PyErr_SetString(PyExc_TypeError, "grid cells are not deleted (a generation is dropped whole)");
        return -1;
    }
    return cells_store(c, k, v);
}

static Py_ssize_t Cells_length(CellsObject *c)
{
    return c->used + (c->extra != NULL ? PyDict_GET_SIZE(c->extra) : 0);
}

static int Cells_contains(CellsObject *c, PyObject *k)
{
    PyObject *v = cells_lookup(c, k);
    return v != NULL ? 1 : PyErr_Occurred() ? -1 : 0;
}

static PyObject *listing(CellsObject *c, int what)
{
    /* what: 0 keys, 1 values, 2 (key, value) pairs; a list (the table's slot order, then the extra dict's) */
    PyObject *out = PyList_New(0);
    if (out == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i <= c->mask; i++) {
        if (c->vals[i] == NULL)
            continue;
        PyObject *k = what == 1 ? NULL : PyLong_FromLongLong(c->keys[i]), *x;
        if (what == 1)
            x = Py_NewRef(c->vals[i]);
        else if (what == 0)
            x = k;
        else
            x = k == NULL ? NULL : PyTuple_Pack(2, k, c->vals[i]);
        if (what == 2)
            Py_XDECREF(k);
        if (x == NULL || PyList_Append(out, x) < 0) {
            Py_XDECREF(x);
            Py_DECREF(out);
            return NULL;
        }
        Py_DECREF(x);
    }
    if (c->extra != NULL) {
        PyObject *more = what == 0 ? PyDict_Keys(c->extra) : what == 1 ? PyDict_Values(c->extra)
                                                                       : PyDict_Items(c->extra);
        if (more == NULL || PyList_SetSlice(out, PY_SSIZE_T_MAX, PY_SSIZE_T_MAX, more) < 0) {
            Py_XDECREF(more);
            Py_DECREF(out);
            return NULL;
        }
        Py_DECREF(more);
    }
    return out;
}

static PyObject *Cells_keys(CellsObject *c, PyObject *Py_UNUSED(a)) { return listing(c, 0); }
static PyObject *Cells_values(CellsObject *c, PyObject *Py_UNUSED(a)) { return listing(c, 1); }
static PyObject *Cells_items(CellsObject *c, PyObject *Py_UNUSED(a)) { return listing(c, 2); }

static PyObject *Cells_iter(CellsObject *c)
{
    PyObject *ks = listing(c, 0);
    if (ks == NULL)
        return NULL;
    PyObject *it = PyObject_GetIter(ks);
    Py_DECREF(ks);
    return it;
}

static void Cells_dealloc(CellsObject *c)
{
    if (c->vals != NULL)
        for (Py_ssize_t i = 0; i <= c->mask; i++)
            Py_XDECREF(c->vals[i]);
    PyMem_Free(c->keys);
    PyMem_Free(c->vals);
    Py_XDECREF(c->extra);
    Py_TYPE(c)->tp_free((PyObject *)c);
}

static PyMethodDef cells_methods[] = {
    {"get", (PyCFunction)(void (*)(void))Cells_get, METH_FASTCALL, "get(key, default=None), as dict's"},
    {"setdefault", (PyCFunction)(void (*)(void))Cells_setdefault, METH_FASTCALL,
     "setdefault(key, default=None), as dict's"},
    {"keys", (PyCFunction)Cells_keys, METH_NOARGS, "The keys, as a list."},
    {"values", (PyCFunction)Cells_values, METH_NOARGS, "The values, as a list."},
    {"items", (PyCFunction)Cells_items, METH_NOARGS, "The (key, value) pairs, as a list."},
    {NULL, NULL, 0, NULL},
};

static PyMappingMethods cells_mapping = {(lenfunc)Cells_length, (binaryfunc)Cells_subscript,
                                         (objobjargproc)Cells_ass_subscript};
static PySequenceMethods cells_sequence = {.sq_contains = (objobjproc)Cells_contains};

static PyTypeObject CellsType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "aiir.evasion._guardk.Cells",
    .tp_basicsize = sizeof(CellsObject),
    .tp_dealloc = (destructor)Cells_dealloc,
    .tp_as_mapping = &cells_mapping,
    .tp_as_sequence = &cells_sequence,
    .tp_iter = (getiterfunc)Cells_iter,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "One grid generation's cells: a mapping of int64 keys (see _guardk.c).",
    .tp_methods = cells_methods,
};

static PyObject *new_cells(Py_ssize_t n)
{
    Py_ssize_t cap = 8;
    while (cap < 2 * n && cap < ((Py_ssize_t)1 << 24))
        cap *= 2;
    CellsObject *c = PyObject_New(CellsObject, &CellsType);
    if (c == NULL)
        return NULL;
    c->used = 0;
    c->extra = NULL;
    c->keys = NULL;
    c->vals = NULL;
    c->mask = -1;
    if (table_alloc(c, cap) < 0) {
        Py_DECREF(c);
        return NULL;
    }
    return (PyObject *)c;
}

/* ----------------------------------------------------------------------------------------------------------
   grid(zs, keys, preds, scores, i, seq, rot_at, client, thr, band, r2, t0, t1, t2, o0, o1, o2, hits_append,
        sums, cs0, bucket) -> (i, seq, added)

   Guard._grid_rows's fast path: rows i, i+1, ... of a request whose query has no near-duplicate candidate in
   its six grid cells (current generation t0-t2, previous o0-o2), which is what ~all clean rows are. For each
   such row it does exactly what Guard._rows does for it: the boundary bit from the score; the entry
   (seq, client, p, seq, z) stored in the three current cells as _rows stores it (an empty cell holds the entry;
   a cell of one entry becomes a list of both; a list gets the entry appended and its oldest dropped past
   `bucket`; _rows' exact-repeat cases cannot occur here: an entry of the same z is within the radius); a row
   with signal bits adds (cs0 + seq, bits) to the client's hits and counts them in sums; seq + 1. It stops,
   touching nothing of that row, at the first row it cannot decide alone, and returns its
   index (len(zs) when every row is done): a row at rot_at (a new generation), a prediction not an exact
   int, bool or str, a score neither None nor an exact float, a row not of the kernel's shape, or an entry in
   one of the six cells within sqrt(r2) of the query. r2 is the near-duplicate radius squared with a margin
   (Guard._prepare: r * r * (1 + 1e-9)); the sum of squared differences computed here is within ~1e-14 of
   math.dist's square, so a row passed here has no entry that _rows' rejection test (math.dist < r) keeps. The
   caller gives the stopped row to _rows and calls again from the next. */
static int far_entry(PyObject *x, const double *zv, Py_ssize_t d, double r2)
{
    /* 1: x is an entry whose z lies surely farther than sqrt(r2) from zv; 0: not surely (the caller stops) */
    if (!PyTuple_CheckExact(x) || PyTuple_GET_SIZE(x) != 5)
        return 0;
    PyObject *xz = PyTuple_GET_ITEM(x, 4);
    if (!PyBytes_CheckExact(xz) || PyBytes_GET_SIZE(xz) != (Py_ssize_t)(d * sizeof(double)))
        return 0;
    double xv[MAXD];
    memcpy(xv, PyBytes_AS_STRING(xz), (size_t)d * sizeof(double)); /* no alignment assumed */
    double s = 0.0;
    for (Py_ssize_t j = 0; j < d; j++) {
        double t = zv[j] - xv[j];
        s += t * t;
    }
    return s > r2; /* NaN: 0 */
}

static int far_cell(PyObject *b, const double *zv, Py_ssize_t d, double r2)
{
    if (b == NULL)
        return 1;
    if (PyTuple_CheckExact(b))
        return far_entry(b, zv, d, r2);
    if (!PyList_CheckExact(b) || PyList_GET_SIZE(b) < 1)
        return 0;
    for (Py_ssize_t j = 0; j < PyList_GET_SIZE(b); j++)
        if (!far_entry(PyList_GET_ITEM(b, j), zv, d, r2))
            return 0;
    return 1;
}

static int store(CellsObject *t, Py_ssize_t i, long long k, PyObject *b, PyObject *e, Py_ssize_t bucket)
{
    /* _rows' storing of an entry whose cell holds no entry of the same z: an entry of the same z lies within
       the radius, so grid() has stopped before any such row (_rows' exact-repeat cases are its own). i: k's slot
       in t, from the look-up that found b (t is not written between the two) */
    if (b == NULL)
        return cput(t, i, k, e);
    if (PyTuple_CheckExact(b)) {
        PyObject *l = PyList_New(2);
        if (l == NULL)
            return -1;
        Py_INCREF(b);
        Py_INCREF(e);
        PyList_SET_ITEM(l, 0, b);
        PyList_SET_ITEM(l, 1, e);
        int rc = cput(t, i, k, l);
        Py_DECREF(l);
        return rc;
    }
    if (PyList_Append(b, e) < 0)
        return -1;
    return PyList_GET_SIZE(b) > bucket ? PyList_SetSlice(b, 0, 1, NULL) : 0;
}

static PyObject *ints(Py_ssize_t n, const long long *v)
{
    /* a tuple of n ints, untracked (ints only: in no cycle), without Py_BuildValue's format parsing (~500
       instructions a call) */
    PyObject *t = PyTuple_New(n);
    if (t == NULL)
        return NULL;
    for (Py_ssize_t j = 0; j < n; j++) {
        PyObject *x = PyLong_FromLongLong(v[j]);
        if (x == NULL) {
            Py_DECREF(t);
            return NULL;
        }
        PyTuple_SET_ITEM(t, j, x);
    }
    PyObject_GC_UnTrack(t);
    return t;
}

static PyObject *grid(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    if (nargs != 21 || !PyList_CheckExact(args[0]) || !PyByteArray_CheckExact(args[1]) || !PyList_CheckExact(args[2])
        || !PyList_CheckExact(args[3]) || !PyList_CheckExact(args[18]) || PyList_GET_SIZE(args[18]) != 4) {
        PyErr_SetString(PyExc_TypeError, "grid: see _guardk.c for the arguments");
        return NULL;
    }
    PyObject *zs = args[0], *keys = args[1], *preds = args[2], *scores = args[3], *client = args[7];
    PyObject *tabs[6];
    for (int g = 0; g < 6; g++) {
        tabs[g] = args[11 + g];
        if (!Py_IS_TYPE(tabs[g], &CellsType)) {
            PyErr_SetString(PyExc_TypeError, "grid: the grid generations must be Cells (cells(n))");
            return NULL;
        }
    }
    PyObject *append = args[17], *sums = args[18];
    Py_ssize_t i = PyLong_AsSsize_t(args[4]), seq = PyLong_AsSsize_t(args[5]), rot_at = PyLong_AsSsize_t(args[6]);
    Py_ssize_t cs0 = PyLong_AsSsize_t(args[19]), bucket = PyLong_AsSsize_t(args[20]);
    double thr = PyFloat_AsDouble(args[8]), band = PyFloat_AsDouble(args[9]), r2 = PyFloat_AsDouble(args[10]);
    if (PyErr_Occurred())
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(zs);
    if (PyList_GET_SIZE(preds) < n || PyList_GET_SIZE(scores) < n) {
        PyErr_SetString(PyExc_ValueError, "grid: fewer predictions or scores than rows");
        return NULL;
    }
    long added = 0;
    double zv[MAXD];
    for (; i < n; i++) {
        if (seq >= rot_at)
            break;
        if (PyByteArray_GET_SIZE(keys) < (Py_ssize_t)((i + 1) * 4 * sizeof(long long)))
            break; /* not rows()' layout (or resized): _rows decides */
        const long long *kr = (const long long *)PyByteArray_AS_STRING(keys) + 4 * i;
        PyObject *z = PyList_GET_ITEM(zs, i);
        Py_ssize_t zb = PyBytes_CheckExact(z) ? PyBytes_GET_SIZE(z) : 0;
        if (zb < (Py_ssize_t)sizeof(double) || zb > (Py_ssize_t)(MAXD * sizeof(double))
            || zb % (Py_ssize_t)sizeof(double))
            break;
        Py_ssize_t d = zb / (Py_ssize_t)sizeof(double);
        memcpy(zv, PyBytes_AS_STRING(z), (size_t)zb);
        PyObject *p = PyList_GET_ITEM(preds, i), *s = PyList_GET_ITEM(scores, i);
        if (!(PyLong_CheckExact(p) || PyUnicode_CheckExact(p) || PyBool_Check(p)))
            break;
        long flags = (long)kr[3];
        if (s != Py_None) {
            if (!PyFloat_CheckExact(s))
                break;
            double dd = PyFloat_AS_DOUBLE(s) - thr;
            if (-band < dd && dd < band)
                flags |= 2;
        }
        PyObject *cells[6];
        const long long kv[3] = {kr[0], kr[1], kr[2]};
        Py_ssize_t si[3]; /* the current generation's slots of the row's keys: store() writes there */
        int ok = 1;
        for (int g = 0; g < 3; g++) {
            si[g] = slot((CellsObject *)tabs[g], kv[g]);
            cells[g] = ((CellsObject *)tabs[g])->vals[si[g]];
        }
        for (int g = 3; g < 6; g++)
            cells[g] = cget((CellsObject *)tabs[g], kv[g % 3]);
        for (int g = 0; g < 6 && ok; g++)
            ok = far_cell(cells[g], zv, d, r2);
        if (!ok)
            break; /* a near-duplicate candidate (or undecided): _rows decides this row */
        for (int g = 0; g < 3; g++)
            Py_XINCREF(cells[g]); /* kept alive while the other cells are written */
        PyObject *sq = PyLong_FromSsize_t(seq);
        PyObject *e = sq == NULL ? NULL : PyTuple_Pack(5, sq, client, p, sq, z);
        Py_XDECREF(sq);
        int rc = e == NULL ? -1 : 0;
        if (e != NULL)
            PyObject_GC_UnTrack(e); /* ints, strings and bytes: in no cycle */
        for (int g = 0; g < 3; g++) {
            if (rc == 0)
                rc = store((CellsObject *)tabs[g], si[g], kv[g], cells[g], e, bucket);
            Py_XDECREF(cells[g]);
        }
        Py_XDECREF(e);
        if (rc < 0)
            return NULL;
        if (flags) {
            added |= flags;
            PyObject *h = ints(2, (long long[2]){cs0 + seq, flags});
            PyObject *res = h == NULL ? NULL : PyObject_CallOneArg(append, h);
            Py_XDECREF(h);
            if (res == NULL)
                return NULL;
            Py_DECREF(res);
            static const long bits[4] = {1, 2, 4, 8};
            for (int j = 0; j < 4; j++) {
                if (!(flags & bits[j]))
                    continue;
                long v = PyLong_AsLong(PyList_GET_ITEM(sums, j));
                if (v == -1 && PyErr_Occurred())
                    return NULL;
                PyObject *nv = PyLong_FromLong(v + 1);
                if (nv == NULL || PyList_SetItem(sums, j, nv) < 0)
                    return NULL;
            }
        }
        seq++;
    }
    return ints(3, (long long[3]){i, seq, added});
}

/* cells(n) -> an empty Cells sized for n keys (at most half full: no growth while a generation fills) */
static PyObject *cells(PyObject *self, PyObject *arg)
{
    (void)self;
    Py_ssize_t n = PyLong_AsSsize_t(arg);
    if (n == -1 && PyErr_Occurred())
        return NULL;
    return new_cells(n);
}

static PyMethodDef methods[] = {
    {"rows", (PyCFunction)(void (*)(void))rows, METH_FASTCALL, "The guard's per-row arithmetic (see the source)."},
    {"grid", (PyCFunction)(void (*)(void))grid, METH_FASTCALL, "The guard's grid bookkeeping of rows without a "
     "near-duplicate candidate (see the source)."},
    {"cells", cells, METH_O, "An empty Cells (a grid generation) sized for n keys."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_guardk", "The inline guard's optional C kernel.", -1,
                                    methods};

/* KERNEL_ABI: raised whenever the call's arguments or results change; guard.py refuses a build of another
   (a stale .so left in the source tree by an older editable install) and uses its Python path instead. */
#define KERNEL_ABI 5 /* 2: grid(); 3: z as bytes of doubles; 4: generations as Cells; 5: rows() as (zs, keys) */

PyMODINIT_FUNC PyInit__guardk(void) {
    if (PyType_Ready(&CellsType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m != NULL && (PyModule_AddIntConstant(m, "ABI", KERNEL_ABI) < 0
                      || PyModule_AddIntConstant(m, "MAXD", MAXD) < 0
                      || PyModule_AddObjectRef(m, "Cells", (PyObject *)&CellsType) < 0)) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
