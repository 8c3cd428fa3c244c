/* The inline guard's per-row arithmetic in C: an optional accelerator of Guard._rows_fn's generated function.

   rows(rows, idx, params, d, m, off, radix) -> None | False | (out, slow, between)

   The same IEEE double operations in the same order as the generated Python function (built with
   -ffp-contract=off: no fused multiply-add; x86-64 SSE2 doubles): z_k = (x - mean_k) * stdinv_k;
   n2 = ((z_0 z_0 + z_1 z_1) + z_2 z_2) + ...; h_j = ((c_0j z_0 + c_1j z_1) + ...) with a projection, else z;
   f_j = floor(h_j * s3); grid g's key = sum_j ((f_j + off + g) // 3) * radix**j, as an int (the tables' float
   sum has the same value: an equal dict key).

   Returns None when a value is not an exact float, int or bool (or an int too large for a double, or a row too
   short): the Python function then decides (conversions, errors). False when a row's n2 is not finite (the
   Python function returns None there: the request is not scored). Otherwise out[i] = (z, k0, k1, k2, ood bit)
   as the Python function's, except the rows listed in `slow` (n2 at or past the tables' bound: out[i] is None,
   the Python function computes the row) and in `between` (n2 between the outlier model's eigenvalue bounds:
   out[i]'s bit is 0, the caller decides it with the quadratic form).

   params (doubles): mean[d], stdinv[d], proj[d * m] (k-major: coefficient of z_k in h_j at k * m + j; absent
   when m == d without a projection), s3, nb, lo, hi. idx: the features' positions (Py_ssize_t each). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>

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
        PyObject *zt = PyTuple_New(d);
        if (zt == NULL)
            goto fail;
        for (Py_ssize_t k = 0; k < d; k++) {
            PyObject *f = PyFloat_FromDouble(z[k]);
            if (f == NULL) {
                Py_DECREF(zt);
                goto fail;
            }
            PyTuple_SET_ITEM(zt, k, f);
        }
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

static PyMethodDef methods[] = {
    {"rows", (PyCFunction)(void (*)(void))rows, METH_FASTCALL, "The guard's per-row arithmetic (see the source)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_guardk", "The inline guard's optional C kernel.", -1,
                                    methods};

/* KERNEL_ABI: raised whenever the call's arguments or results change; guard.py refuses a build of another
   (a stale .so left in the source tree by an older editable install) and uses its Python path instead. */
#define KERNEL_ABI 1

PyMODINIT_FUNC PyInit__guardk(void) {
    PyObject *m = PyModule_Create(&module);
    if (m != NULL && (PyModule_AddIntConstant(m, "ABI", KERNEL_ABI) < 0
                      || PyModule_AddIntConstant(m, "MAXD", MAXD) < 0)) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
