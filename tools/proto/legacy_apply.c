/* Prototype (issue 12): karb.book's per-change delta loop in C, to measure what a native book
 * path would buy. Same semantics as Book._apply_locked's loop: both sides are lists of
 * (price, size) tuples in ascending price order; a change is (side, price, size) with side
 * "bid" / "ask", 0 < price < inf, 0 <= size < inf (NaN fails), size 0 removes.
 *
 * apply_changes(bids, asks, changes, bid_edge, ask_edge) -> flags
 *   bit 0: a bid change reached the top-N window (price >= bid_edge), bit 1: an ask one
 *   (price <= ask_edge); -1: a bad change (the caller invalidates the book, as in Python).
 * Not built or used by the engine: tools/proto/bench_legacy_native.py builds and times it.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>

static PyObject *BID, *ASK;

/* bisect_left on a list of floats */
static Py_ssize_t find(PyObject *keys, double key) {
    Py_ssize_t lo = 0, hi = PyList_GET_SIZE(keys);
    while (lo < hi) {
        Py_ssize_t mid = (lo + hi) / 2;
        if (PyFloat_AS_DOUBLE(PyList_GET_ITEM(keys, mid)) < key) lo = mid + 1; else hi = mid;
    }
    return lo;
}

static PyObject *apply_changes(PyObject *self, PyObject *args) {
    PyObject *bids, *asks, *bid_keys, *ask_keys, *changes;
    double bid_edge, ask_edge;
    if (!PyArg_ParseTuple(args, "O!O!O!O!O!dd", &PyList_Type, &bids, &PyList_Type, &asks,
                          &PyList_Type, &bid_keys, &PyList_Type, &ask_keys,
                          &PyList_Type, &changes, &bid_edge, &ask_edge))
        return NULL;
    long flags = 0;
    Py_ssize_t n = PyList_GET_SIZE(changes);
    for (Py_ssize_t k = 0; k < n; k++) {
        PyObject *change = PyList_GET_ITEM(changes, k);
        if (!PyTuple_CheckExact(change) || PyTuple_GET_SIZE(change) != 3) return PyLong_FromLong(-1);
        PyObject *side = PyTuple_GET_ITEM(change, 0);
        PyObject *p = PyTuple_GET_ITEM(change, 1), *s = PyTuple_GET_ITEM(change, 2);
        if (!PyFloat_CheckExact(p) || !PyFloat_CheckExact(s)) return PyLong_FromLong(-1);
        double price = PyFloat_AS_DOUBLE(p), size = PyFloat_AS_DOUBLE(s);
        if (!(price > 0.0 && price < INFINITY && size >= 0.0 && size < INFINITY))
            return PyLong_FromLong(-1);
        PyObject *levels, *keys;
        double key;
        if (PyUnicode_Compare(side, BID) == 0) {
            levels = bids; keys = bid_keys; key = price; if (price >= bid_edge) flags |= 1;
        } else if (PyUnicode_Compare(side, ASK) == 0) {
            levels = asks; keys = ask_keys; key = -price; if (price <= ask_edge) flags |= 2;
        } else { PyErr_Clear(); return PyLong_FromLong(-1); }
        /* keys hold floats, as the book's Python code writes them from float prices */
        Py_ssize_t i = find(keys, key);
        int found = i < PyList_GET_SIZE(keys) && PyFloat_AS_DOUBLE(PyList_GET_ITEM(keys, i)) == key;
        if (size > 0.0) {
            PyObject *level = PyTuple_Pack(2, p, s);
            if (level == NULL) return NULL;
            if (found) { if (PyList_SetItem(levels, i, level) < 0) return NULL; }
            else {
                PyObject *k = PyFloat_FromDouble(key);
                int r = k == NULL ? -1 : PyList_Insert(levels, i, level);
                if (r == 0) r = PyList_Insert(keys, i, k);
                Py_DECREF(level); Py_XDECREF(k);
                if (r < 0) return NULL;
            }
        } else if (found) {
            if (PyList_SetSlice(levels, i, i + 1, NULL) < 0 || PyList_SetSlice(keys, i, i + 1, NULL) < 0)
                return NULL;
        }
    }
    return PyLong_FromLong(flags);
}

static PyMethodDef methods[] = {
    {"apply_changes", apply_changes, METH_VARARGS, "apply (side, price, size) changes"},
    {NULL, NULL, 0, NULL}};
static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "legacy_apply", NULL, -1, methods};

PyMODINIT_FUNC PyInit_legacy_apply(void) {
    BID = PyUnicode_InternFromString("bid");
    ASK = PyUnicode_InternFromString("ask");
    return PyModule_Create(&module);
}
