/* The inline guard's per-row arithmetic in C: an optional accelerator of Guard._rows_fn's generated function.

   rows(rows, idx, params, d, m, off, radix) -> None | False | (out, slow, between)
   grid(...) -> (i, seq, added): the grid bookkeeping of rows without a near-duplicate candidate (below)
   cells(n) -> dict: an empty dict sized for n keys (a grid generation)

   The same IEEE double operations in the same order as the generated Python function (built with
   -ffp-contract=off: no fused multiply-add; x86-64 SSE2 doubles): z_k = (x - mean_k) * stdinv_k;
   n2 = ((z_0 z_0 + z_1 z_1) + z_2 z_2) + ...; h_j = ((c_0j z_0 + c_1j z_1) + ...) with a projection, else z;
   f_j = floor(h_j * s3); grid g's key = sum_j ((f_j + off + g) // 3) * radix**j, as an int (the tables' float
   sum has the same value: an equal dict key).

   Returns None when a value is not an exact float, int or bool (or an int too large for a double, or a row too
   short): the Python function then decides (conversions, errors). False when a row's n2 is not finite (the
   Python function returns None there: the request is not scored). Otherwise out[i] = (z, k0, k1, k2, ood bit)
   as the Python function's (but z: a bytes object of the d doubles, -0.0 as 0.0: Guard._kernel), except the
   rows listed in `slow` (n2 at or past the tables' bound: out[i] is None, the Python function computes the row) and in `between` (n2 between the outlier model's eigenvalue bounds:
   out[i]'s bit is 0, the caller decides it with the quadratic form).

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
    if (out == NULL || slow == NULL || between == NULL)
        goto fail;
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
        PyObject *e = PyTuple_New(5);
        if (e == NULL) {
            Py_DECREF(zt);
            goto fail;
        }
        PyTuple_SET_ITEM(e, 0, zt);
        PyObject *a0 = PyLong_FromLongLong(k0), *a1 = PyLong_FromLongLong(k1), *a2 = PyLong_FromLongLong(k2);
        PyObject *b = PyLong_FromLong(bit);
        /* SET_ITEM of NULL is allowed in a new tuple: Py_DECREF(e) then frees what was set */
        PyTuple_SET_ITEM(e, 1, a0);
        PyTuple_SET_ITEM(e, 2, a1);
        PyTuple_SET_ITEM(e, 3, a2);
        PyTuple_SET_ITEM(e, 4, b);
        if (a0 == NULL || a1 == NULL || a2 == NULL || b == NULL) {
            Py_DECREF(e);
            goto fail;
        }
        /* bytes and ints only: no cycle can pass through them, so the collector need not track the tuple (what it
           would find out itself, at the cost of traversing it first: _PyTuple_MaybeUntrack) */
        PyObject_GC_UnTrack(e);
        PyList_SET_ITEM(out, i, e);
    }
    PyObject *res = PyTuple_Pack(3, out, slow, between);
    Py_DECREF(out);
    Py_DECREF(slow);
    Py_DECREF(between);
    return res;

python: /* not plain numbers: the Python function decides */
    Py_DECREF(out);
    Py_DECREF(slow);
    Py_DECREF(between);
    Py_RETURN_NONE;

fail:
    Py_XDECREF(out);
    Py_XDECREF(slow);
    Py_XDECREF(between);
    return NULL;
}

/* ----------------------------------------------------------------------------------------------------------
   grid(feats, preds, scores, i, seq, rot_at, client, thr, band, r2, t0, t1, t2, o0, o1, o2, hits_append, sums,
        cs0, bucket) -> (i, seq, added)

   Guard._grid_rows's fast path: rows i, i+1, ... of a request whose query has no near-duplicate candidate in
   its six grid cells (current generation t0-t2, previous o0-o2), which is what ~all clean rows are. For each
   such row it does exactly what Guard._rows does for it: the boundary bit from the score; the entry
   (seq, client, p, seq, z) stored in the three current cells as _rows stores it (an empty cell holds the entry;
   a cell of one entry becomes a list of both; a list gets the entry appended and its oldest dropped past
   `bucket`; _rows' exact-repeat cases cannot occur here: an entry of the same z is within the radius); a row
   with signal bits adds (cs0 + seq, bits) to the client's hits and counts them in sums; seq + 1. It stops,
   touching nothing of that row, at the first row it cannot decide alone, and returns its
   index (len(feats) when every row is done): a row at rot_at (a new generation), a prediction not an exact
   int, bool or str, a score neither None nor an exact float, a row not of the kernel's shape, or an entry in
   one of the six cells within sqrt(r2) of the query. r2 is the near-duplicate radius squared with a margin
   (Guard._prepare: r * r * (1 + 1e-9)); the sum of squared differences computed here is within ~1e-14 of
   math.dist's square, so a row passed here has no entry that _rows' rejection test (math.dist < r) keeps. The
   caller gives the stopped row to _rows and calls again from the next. */
/* dict look-ups and stores with the key's hash computed once (3.11/3.12 export these; later: the public calls) */
#if PY_VERSION_HEX < 0x030D0000
#define GET_KH(t, k, h) _PyDict_GetItem_KnownHash((t), (k), (h))
#define SET_KH(t, k, v, h) _PyDict_SetItem_KnownHash((t), (k), (v), (h))
#else
#define GET_KH(t, k, h) ((void)(h), PyDict_GetItemWithError((t), (k)))
#define SET_KH(t, k, v, h) ((void)(h), PyDict_SetItem((t), (k), (v)))
#endif

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

static int store(PyObject *t, PyObject *k, Py_hash_t kh, PyObject *b, PyObject *e, Py_ssize_t bucket)
{
    /* _rows' storing of an entry whose cell holds no entry of the same z: an entry of the same z lies within
       the radius, so grid() has stopped before any such row (_rows' exact-repeat cases are its own) */
    if (b == NULL)
        return SET_KH(t, k, e, kh);
    if (PyTuple_CheckExact(b)) {
        PyObject *l = PyList_New(2);
        if (l == NULL)
            return -1;
        Py_INCREF(b);
        Py_INCREF(e);
        PyList_SET_ITEM(l, 0, b);
        PyList_SET_ITEM(l, 1, e);
        int rc = SET_KH(t, k, l, kh);
        Py_DECREF(l);
        if (rc == 0 && PyObject_GC_IsTracked(t)) /* storing a list tracked the dict: see untrack() */
            PyObject_GC_UnTrack(t);
        return rc;
    }
    if (PyList_Append(b, e) < 0)
        return -1;
    return PyList_GET_SIZE(b) > bucket ? PyList_SetSlice(b, 0, 1, NULL) : 0;
}

static Py_hash_t key_hash(PyObject *k)
{
    /* hash(k): for the kernel's keys (non-negative ints below 2**60: at most two 30-bit digits) read off the digits,
       which an int's hash is below the modulus 2**61 - 1; PyObject_Hash for any other key (~4x the instructions) */
#if PY_VERSION_HEX < 0x030C0000 && PYLONG_BITS_IN_DIGIT == 30 && SIZEOF_VOID_P == 8
    if (PyLong_CheckExact(k)) {
        Py_ssize_t nd = Py_SIZE(k);
        const digit *dg = ((PyLongObject *)k)->ob_digit;
        if (nd == 0)
            return 0;
        if (nd == 1)
            return (Py_hash_t)dg[0];
        if (nd == 2)
            return (Py_hash_t)(((unsigned long long)dg[1] << PyLong_SHIFT) | dg[0]);
    }
#endif
    return PyObject_Hash(k);
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

static void untrack(PyObject **tabs)
{
    for (int g = 0; g < 3; g++)
        if (PyObject_GC_IsTracked(tabs[g]))
            PyObject_GC_UnTrack(tabs[g]);
}

static PyObject *grid(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    if (nargs != 20 || !PyList_CheckExact(args[0]) || !PyList_CheckExact(args[1]) || !PyList_CheckExact(args[2])
        || !PyList_CheckExact(args[17]) || PyList_GET_SIZE(args[17]) != 4) {
        PyErr_SetString(PyExc_TypeError, "grid: see _guardk.c for the arguments");
        return NULL;
    }
    PyObject *feats = args[0], *preds = args[1], *scores = args[2], *client = args[6];
    PyObject *tabs[6];
    for (int g = 0; g < 6; g++) {
        tabs[g] = args[10 + g];
        if (!PyDict_CheckExact(tabs[g])) {
            PyErr_SetString(PyExc_TypeError, "grid: the grid generations must be dicts");
            return NULL;
        }
    }
    PyObject *append = args[16], *sums = args[17];
    Py_ssize_t i = PyLong_AsSsize_t(args[3]), seq = PyLong_AsSsize_t(args[4]), rot_at = PyLong_AsSsize_t(args[5]);
    Py_ssize_t cs0 = PyLong_AsSsize_t(args[18]), bucket = PyLong_AsSsize_t(args[19]);
    double thr = PyFloat_AsDouble(args[7]), band = PyFloat_AsDouble(args[8]), r2 = PyFloat_AsDouble(args[9]);
    if (PyErr_Occurred())
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(feats);
    if (PyList_GET_SIZE(preds) < n || PyList_GET_SIZE(scores) < n) {
        PyErr_SetString(PyExc_ValueError, "grid: fewer predictions or scores than rows");
        return NULL;
    }
    long added = 0;
    double zv[MAXD];
    untrack(tabs); /* _rows, called since the last grid(), may have stored a list (see the end) */
    for (; i < n; i++) {
        if (seq >= rot_at)
            break;
        PyObject *f = PyList_GET_ITEM(feats, i);
        if (!PyTuple_CheckExact(f) || PyTuple_GET_SIZE(f) != 5)
            break;
        PyObject *z = PyTuple_GET_ITEM(f, 0), *fl = PyTuple_GET_ITEM(f, 4);
        Py_ssize_t zb = PyBytes_CheckExact(z) ? PyBytes_GET_SIZE(z) : 0;
        if (zb < (Py_ssize_t)sizeof(double) || zb > (Py_ssize_t)(MAXD * sizeof(double))
            || zb % (Py_ssize_t)sizeof(double) || !PyLong_CheckExact(fl))
            break;
        Py_ssize_t d = zb / (Py_ssize_t)sizeof(double);
        memcpy(zv, PyBytes_AS_STRING(z), (size_t)zb);
        PyObject *p = PyList_GET_ITEM(preds, i), *s = PyList_GET_ITEM(scores, i);
        if (!(PyLong_CheckExact(p) || PyUnicode_CheckExact(p) || PyBool_Check(p)))
            break;
        long flags = PyLong_AsLong(fl);
        if (flags == -1 && PyErr_Occurred())
            return NULL;
        if (s != Py_None) {
            if (!PyFloat_CheckExact(s))
                break;
            double dd = PyFloat_AS_DOUBLE(s) - thr;
            if (-band < dd && dd < band)
                flags |= 2;
        }
        PyObject *cells[6];
        Py_hash_t kh[3];
        for (int g = 0; g < 3; g++) {
            kh[g] = key_hash(PyTuple_GET_ITEM(f, 1 + g));
            if (kh[g] == -1)
                return NULL;
        }
        for (int g = 0; g < 6; g++) {
            cells[g] = GET_KH(tabs[g], PyTuple_GET_ITEM(f, 1 + g % 3), kh[g % 3]);
            if (cells[g] == NULL && PyErr_Occurred())
                return NULL;
        }
        int ok = 1;
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
            PyObject_GC_UnTrack(e); /* ints, strings and bytes: in no cycle (as rows()' tuples) */
        for (int g = 0; g < 3; g++) {
            if (rc == 0)
                rc = store(tabs[g], PyTuple_GET_ITEM(f, 1 + g), kh[g], cells[g], e, bucket);
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
    /* A cell that became a list made its generation's dict tracked by the cyclic collector, which then traverses
       its ~10^4 cells at every collection of its generation (in the gateway, full ones over a large heap). No cycle
       can pass through the grids: keys are numbers, an entry holds an int, a str, an int/str/bool prediction (or
       an int: _rows hashes other ones) and bytes, a list holds entries. Untracked, the dict is a root to the
       collector, so the lists it holds (tracked) are kept alive as they must be; only its traversal is saved. */
    untrack(tabs);
    return ints(3, (long long[3]){i, seq, added});
}

/* cells(n) -> an empty dict sized for n keys: a grid generation's cells (Guard._rotate), which otherwise grows
   through a dozen resizes every generation */
static PyObject *cells(PyObject *self, PyObject *arg)
{
    (void)self;
    Py_ssize_t n = PyLong_AsSsize_t(arg);
    if (n == -1 && PyErr_Occurred())
        return NULL;
#if PY_VERSION_HEX < 0x030D0000
    return _PyDict_NewPresized(n < 0 ? 0 : n > (1 << 20) ? (1 << 20) : n);
#else
    return PyDict_New();
#endif
}

static PyMethodDef methods[] = {
    {"rows", (PyCFunction)(void (*)(void))rows, METH_FASTCALL, "The guard's per-row arithmetic (see the source)."},
    {"grid", (PyCFunction)(void (*)(void))grid, METH_FASTCALL, "The guard's grid bookkeeping of rows without a "
     "near-duplicate candidate (see the source)."},
    {"cells", cells, METH_O, "An empty dict sized for n keys."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_guardk", "The inline guard's optional C kernel.", -1,
                                    methods};

/* KERNEL_ABI: raised whenever the call's arguments or results change; guard.py refuses a build of another
   (a stale .so left in the source tree by an older editable install) and uses its Python path instead. */
#define KERNEL_ABI 3 /* 2: grid(); 3: z as bytes of doubles */

PyMODINIT_FUNC PyInit__guardk(void) {
    PyObject *m = PyModule_Create(&module);
    if (m != NULL && (PyModule_AddIntConstant(m, "ABI", KERNEL_ABI) < 0
                      || PyModule_AddIntConstant(m, "MAXD", MAXD) < 0)) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
