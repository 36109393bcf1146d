/* Optional accelerator for two hot paths: MonitoredClient's timed call, and the lease of Pool.connection().
 *
 * syncpool works without it (pure Python, see monitoring.py and pool.py); when a C compiler is at hand at install
 * time this module is built too, and exact-mode recorders and every pool's leases use it. Three types:
 *
 * Accumulator  durations not yet folded into a Python Histogram (a monitored method's latencies, or a pool's
 *              lease waits and uses): count, sum, min, max and one
 *              counter per histogram bucket. The bucket index is the one histogram.py computes (the IEEE-754
 *              exponent and top 6 mantissa bits of the value), so a fold is a merge of counts, not a re-bucketing.
 * TimedCall    a callable that reads the perf_counter clock, forwards its arguments unchanged (vectorcall: no
 *              tuple or dict is built), reads the clock again and adds the duration to the accumulator. A call
 *              that ends at or after the accumulator's rollover, or raises, is handed to the Python recorder's
 *              record_late / record_error, exactly as the pure-Python wrapper does.
 * Lease        syncpool.Lease, Pool.connection()'s context manager: __enter__ calls pool.getconn(timeout),
 *              __exit__ pool.putconn(client).
 *
 * Thread safety: every access happens with the GIL held and none of them releases it, so the counters need no
 * lock. The module does not declare free-threading support; syncpool/_accel.py does not import it on such builds.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <structmember.h>

/* The bucket layout of syncpool/histogram.py; tests check that both agree on every index. */
#define SHIFT 46
#define MIN_INDEX ((-30 + 1023) << 6)
#define MAX_INDEX ((20 + 1023) << 6)
#define UNDERFLOW (MIN_INDEX - 1)
#define NBUCKETS (MAX_INDEX - UNDERFLOW + 1)
#define MIN_VALUE (1.0 / 1073741824.0) /* 2**-30 */
#define MAX_VALUE 1048576.0            /* 2**20 */

static inline int64_t
perf_counter_ns(void)
{
#if PY_VERSION_HEX >= 0x030D0000
    PyTime_t t;
    (void)PyTime_PerfCounterRaw(&t); /* cannot fail on the platforms CPython supports; 0 if it did */
    return (int64_t)t;
#else
    return (int64_t)_PyTime_GetPerfCounter();
#endif
}

static inline double
ns_to_seconds(int64_t ns)
{
    return (double)ns / 1e9; /* what time.perf_counter() returns for the same reading */
}

/* -- Accumulator ----------------------------------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    double rollover; /* perf_counter seconds at which the current 50 ms slot ends */
    Py_ssize_t count;
    double sum;
    double min;
    double max;
    uint32_t counts[NBUCKETS]; /* folded every 50 ms slot, or every 1024 values in a pool: far below 2**32 */
} Accumulator;

static void
accumulator_clear(Accumulator *self)
{
    self->count = 0;
    self->sum = 0.0;
    self->min = Py_HUGE_VAL;
    self->max = 0.0;
    memset(self->counts, 0, sizeof(self->counts));
}

static inline void
accumulator_add(Accumulator *self, double seconds)
{
    Py_ssize_t index;
    uint64_t bits;

    if (!(seconds >= 0.0)) { /* negative or NaN: cannot come from a monotonic clock, but never index with it */
        seconds = 0.0;
    }
    if (seconds < MIN_VALUE) {
        index = UNDERFLOW;
    }
    else if (seconds >= MAX_VALUE) {
        index = MAX_INDEX;
    }
    else {
        memcpy(&bits, &seconds, sizeof(bits));
        index = (Py_ssize_t)(bits >> SHIFT);
    }
    self->counts[index - UNDERFLOW]++;
    self->count++;
    self->sum += seconds;
    if (seconds > self->max) {
        self->max = seconds;
    }
    if (seconds < self->min) {
        self->min = seconds;
    }
}

static PyObject *
accumulator_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *keywords[] = {"rollover", NULL};
    double rollover = Py_HUGE_VAL;
    Accumulator *self;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|d:Accumulator", keywords, &rollover)) {
        return NULL;
    }
    self = (Accumulator *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->rollover = rollover;
    accumulator_clear(self);
    return (PyObject *)self;
}

static PyObject *
accumulator_add_py(Accumulator *self, PyObject *arg)
{
    double seconds = PyFloat_AsDouble(arg);

    if (seconds == -1.0 && PyErr_Occurred()) {
        return NULL;
    }
    accumulator_add(self, seconds);
    Py_RETURN_NONE;
}

static PyObject *
accumulator_drain(Accumulator *self, PyObject *Py_UNUSED(ignored))
{
    PyObject *buckets, *result;
    Py_ssize_t i, seen = 0;

    if (self->count == 0) {
        Py_RETURN_NONE;
    }
    buckets = PyDict_New();
    if (buckets == NULL) {
        return NULL;
    }
    for (i = 0; i < NBUCKETS && seen < self->count; i++) {
        PyObject *key, *value;
        int failed;

        if (self->counts[i] == 0) {
            continue;
        }
        seen += self->counts[i];
        key = PyLong_FromSsize_t(i + UNDERFLOW);
        value = PyLong_FromUnsignedLong(self->counts[i]);
        failed = key == NULL || value == NULL || PyDict_SetItem(buckets, key, value) < 0;
        Py_XDECREF(key);
        Py_XDECREF(value);
        if (failed) {
            Py_DECREF(buckets);
            return NULL; /* nothing cleared: a later drain returns these counts */
        }
    }
    result = Py_BuildValue("(ndddN)", self->count, self->sum, self->min, self->max, buckets);
    if (result == NULL) {
        return NULL; /* buckets was released by Py_BuildValue ("N") */
    }
    accumulator_clear(self);
    return result;
}

static PyObject *
accumulator_get_rollover(Accumulator *self, void *Py_UNUSED(closure))
{
    return PyFloat_FromDouble(self->rollover);
}

static int
accumulator_set_rollover(Accumulator *self, PyObject *value, void *Py_UNUSED(closure))
{
    double rollover;

    if (value == NULL) {
        PyErr_SetString(PyExc_AttributeError, "cannot delete rollover");
        return -1;
    }
    rollover = PyFloat_AsDouble(value);
    if (rollover == -1.0 && PyErr_Occurred()) {
        return -1;
    }
    self->rollover = rollover;
    return 0;
}

static PyObject *
accumulator_get_count(Accumulator *self, void *Py_UNUSED(closure))
{
    return PyLong_FromSsize_t(self->count);
}

static Py_ssize_t
accumulator_length(Accumulator *self)
{
    return self->count;
}

/* append() and len() let an Accumulator stand in for the list of durations the pool folds into its histograms
   every 1024 values: the same two calls on the hot path, without Python's per-value bucketing at each fold. */
static PySequenceMethods accumulator_as_sequence = {
    .sq_length = (lenfunc)accumulator_length,
};

static PyMethodDef accumulator_methods[] = {
    {"add", (PyCFunction)accumulator_add_py, METH_O, "add(seconds): count one duration."},
    {"append", (PyCFunction)accumulator_add_py, METH_O, "append(seconds): the same as add(seconds)."},
    {"drain", (PyCFunction)accumulator_drain, METH_NOARGS,
     "drain() -> (count, sum, min, max, {bucket index: n}) or None if empty; the accumulator is emptied."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef accumulator_getset[] = {
    {"rollover", (getter)accumulator_get_rollover, (setter)accumulator_set_rollover,
     "perf_counter seconds from which calls are handed to the recorder's record_late.", NULL},
    {"count", (getter)accumulator_get_count, NULL, "durations added since the last drain.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject AccumulatorType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "syncpool._speedups.Accumulator",
    .tp_basicsize = sizeof(Accumulator),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Durations not yet folded into a Histogram, counted in its buckets; len() is how many.",
    .tp_as_sequence = &accumulator_as_sequence,
    .tp_new = accumulator_new,
    .tp_methods = accumulator_methods,
    .tp_getset = accumulator_getset,
};

/* -- TimedCall ------------------------------------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    PyObject *method;
    PyObject *recorder; /* the Python _MethodStats: record_late(), record_error() */
    Accumulator *accumulator;
    vectorcallfunc vectorcall;
    PyObject *dict; /* __name__, __wrapped__... set by functools.update_wrapper */
    PyObject *weakrefs;
} TimedCall;

static PyObject *str_record_late;
static PyObject *str_record_error;

static void
report_recorder_failure(TimedCall *self)
{
    /* A failing recorder (out of memory) must not turn a successful call into a failed one, nor replace the
       exception a failed call raised: report it as unraisable, like an exception in __del__. */
    PyErr_WriteUnraisable(self->recorder);
}

static void
record_error(TimedCall *self, int64_t start, PyObject *error)
{
    /* Hand a failed call to recorder.record_error(start, error); the caller re-raises the error afterwards. */
    PyObject *start_seconds = PyFloat_FromDouble(ns_to_seconds(start));
    PyObject *outcome = NULL;

    if (start_seconds != NULL && error != NULL) {
        outcome = PyObject_CallMethodObjArgs(self->recorder, str_record_error, start_seconds, error, NULL);
    }
    if (outcome == NULL && PyErr_Occurred()) {
        report_recorder_failure(self);
    }
    Py_XDECREF(outcome);
    Py_XDECREF(start_seconds);
}

static PyObject *
timed_call_vectorcall(PyObject *callable, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    TimedCall *self = (TimedCall *)callable;
    int64_t start, end;
    double elapsed, end_seconds;
    PyObject *result, *outcome;

    start = perf_counter_ns();
    result = PyObject_Vectorcall(self->method, args, nargsf, kwnames);
    end = perf_counter_ns();
    elapsed = ns_to_seconds(end - start);
    end_seconds = ns_to_seconds(end);
    if (result == NULL) {
#if PY_VERSION_HEX >= 0x030C0000
        PyObject *error = PyErr_GetRaisedException();

        record_error(self, start, error);
        PyErr_SetRaisedException(error);
#else
        PyObject *type, *value, *traceback;

        PyErr_Fetch(&type, &value, &traceback);
        PyErr_NormalizeException(&type, &value, &traceback);
        if (traceback != NULL && value != NULL) {
            PyException_SetTraceback(value, traceback);
        }
        record_error(self, start, value);
        PyErr_Restore(type, value, traceback);
#endif
        return NULL;
    }
    if (end_seconds < self->accumulator->rollover) {
        accumulator_add(self->accumulator, elapsed);
        return result;
    }
    {
        /* About once per 50 ms slot: the recorder folds, moves to the new slot and counts this call. */
        PyObject *end_obj = PyFloat_FromDouble(end_seconds);
        PyObject *elapsed_obj = PyFloat_FromDouble(elapsed);

        if (end_obj != NULL && elapsed_obj != NULL) {
            outcome = PyObject_CallMethodObjArgs(self->recorder, str_record_late, end_obj, elapsed_obj, NULL);
        }
        else {
            outcome = NULL;
        }
        Py_XDECREF(end_obj);
        Py_XDECREF(elapsed_obj);
        if (outcome == NULL && PyErr_Occurred()) {
            report_recorder_failure(self);
        }
        Py_XDECREF(outcome);
    }
    return result;
}

static PyObject *
timed_call_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *keywords[] = {"method", "recorder", "accumulator", NULL};
    PyObject *method, *recorder, *accumulator;
    TimedCall *self;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOO!:TimedCall", keywords, &method, &recorder, &AccumulatorType,
                                     &accumulator)) {
        return NULL;
    }
    if (!PyCallable_Check(method)) {
        PyErr_Format(PyExc_TypeError, "TimedCall needs a callable method, got %.100s", Py_TYPE(method)->tp_name);
        return NULL;
    }
    self = (TimedCall *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    Py_INCREF(method);
    self->method = method;
    Py_INCREF(recorder);
    self->recorder = recorder;
    Py_INCREF(accumulator);
    self->accumulator = (Accumulator *)accumulator;
    self->vectorcall = timed_call_vectorcall;
    return (PyObject *)self;
}

static int
timed_call_traverse(TimedCall *self, visitproc visit, void *arg)
{
    Py_VISIT(self->method);
    Py_VISIT(self->recorder);
    Py_VISIT(self->accumulator);
    Py_VISIT(self->dict);
    return 0;
}

static int
timed_call_clear(TimedCall *self)
{
    Py_CLEAR(self->method);
    Py_CLEAR(self->recorder);
    Py_CLEAR(self->accumulator);
    Py_CLEAR(self->dict);
    return 0;
}

static void
timed_call_dealloc(TimedCall *self)
{
    PyObject_GC_UnTrack(self);
    if (self->weakrefs != NULL) {
        PyObject_ClearWeakRefs((PyObject *)self);
    }
    timed_call_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
timed_call_descr_get(PyObject *self, PyObject *obj, PyObject *Py_UNUSED(type))
{
    /* Bind like a function, so that a TimedCall set on a class (@monitored on a class) is a method. */
    if (obj == NULL || obj == Py_None) {
        Py_INCREF(self);
        return self;
    }
    return PyMethod_New(self, obj);
}

static PyObject *
timed_call_repr(TimedCall *self)
{
    return PyUnicode_FromFormat("<syncpool timed call of %R>", self->method);
}

static PyGetSetDef timed_call_getset[] = {
    {"__dict__", PyObject_GenericGetDict, PyObject_GenericSetDict, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject TimedCallType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "syncpool._speedups.TimedCall",
    .tp_basicsize = sizeof(TimedCall),
    .tp_dealloc = (destructor)timed_call_dealloc,
    .tp_vectorcall_offset = offsetof(TimedCall, vectorcall),
    .tp_repr = (reprfunc)timed_call_repr,
    .tp_call = PyVectorcall_Call,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "TimedCall(method, recorder, accumulator): call method, timing it into accumulator.",
    .tp_traverse = (traverseproc)timed_call_traverse,
    .tp_clear = (inquiry)timed_call_clear,
    .tp_weaklistoffset = offsetof(TimedCall, weakrefs),
    .tp_getset = timed_call_getset,
    .tp_descr_get = timed_call_descr_get,
    .tp_dictoffset = offsetof(TimedCall, dict),
    .tp_new = timed_call_new,
};

/* -- Lease: the context manager of Pool.connection() ---------------------------------------------------------- */

/* Lease(pool, timeout=None): __enter__ calls pool.getconn(timeout) and keeps the client; __exit__ calls
   pool.putconn(client). That is all it does: every decision stays in pool.py. Built by vectorcall and entered and
   left in C, it spares the three Python frames (its construction, __enter__ and __exit__) that a lease otherwise
   costs around getconn and putconn. When this module is used, syncpool.Lease is this type; otherwise it is its
   pure-Python twin in pool.py, which must behave the same (tests/test_lease.py runs its tests against both). */

typedef struct {
    PyObject_HEAD
    PyObject *pool;
    PyObject *timeout;
    PyObject *client; /* NULL unless entered */
} Lease;

static PyObject *str_getconn;
static PyObject *str_putconn;
static PyObject *str_timeout;

static PyObject *
lease_vectorcall(PyObject *type, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    Py_ssize_t nkw = kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames);
    PyObject *timeout = nargs >= 2 ? args[1] : Py_None;
    Lease *self;

    if (nargs < 1 || nargs + nkw > 2) {
        PyErr_SetString(PyExc_TypeError, "Lease(pool, timeout=None) takes a pool and an optional timeout");
        return NULL;
    }
    if (nkw == 1) {
        PyObject *name = PyTuple_GET_ITEM(kwnames, 0);

        if (name != str_timeout && PyUnicode_Compare(name, str_timeout) != 0) {
            PyErr_Format(PyExc_TypeError, "Lease() got an unexpected keyword argument %R", name);
            return NULL;
        }
        timeout = args[1]; /* the keyword's value follows the one positional argument */
    }
    self = PyObject_GC_New(Lease, (PyTypeObject *)type);
    if (self == NULL) {
        return NULL;
    }
    Py_INCREF(args[0]);
    self->pool = args[0];
    Py_INCREF(timeout);
    self->timeout = timeout;
    self->client = NULL;
    PyObject_GC_Track(self);
    return (PyObject *)self;
}

static PyObject *
lease_enter(Lease *self, PyObject *Py_UNUSED(ignored))
{
    PyObject *args[2] = {self->pool, self->timeout};
    PyObject *client;

    if (self->client != NULL) {
        PyErr_SetString(PyExc_RuntimeError,
                        "this lease is already entered: call pool.connection() again for a second client");
        return NULL;
    }
    client = PyObject_VectorcallMethod(str_getconn, args, 2 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
    if (client == NULL) {
        return NULL;
    }
    Py_INCREF(client);
    self->client = client;
    return client;
}

static PyObject *
lease_exit(Lease *self, PyObject *const *Py_UNUSED(args), Py_ssize_t Py_UNUSED(nargs))
{
    PyObject *call_args[2];
    PyObject *client = self->client;
    PyObject *outcome;

    if (client == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "lease was not entered: nothing to return");
        return NULL;
    }
    self->client = NULL; /* left whatever putconn does: it takes the client back or raises for good */
    call_args[0] = self->pool;
    call_args[1] = client;
    outcome = PyObject_VectorcallMethod(str_putconn, call_args, 2 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
    Py_DECREF(client);
    if (outcome == NULL) {
        return NULL;
    }
    Py_DECREF(outcome);
    Py_RETURN_NONE; /* never swallows the block's exception */
}

static int
lease_traverse(Lease *self, visitproc visit, void *arg)
{
    Py_VISIT(self->pool);
    Py_VISIT(self->timeout);
    Py_VISIT(self->client);
    return 0;
}

static int
lease_clear(Lease *self)
{
    Py_CLEAR(self->pool);
    Py_CLEAR(self->timeout);
    Py_CLEAR(self->client);
    return 0;
}

static void
lease_dealloc(Lease *self)
{
    PyObject_GC_UnTrack(self);
    lease_clear(self);
    PyObject_GC_Del(self);
}

static PyMethodDef lease_methods[] = {
    {"__enter__", (PyCFunction)lease_enter, METH_NOARGS, "Lease a client: pool.getconn(timeout)."},
    {"__exit__", (PyCFunction)(void (*)(void))lease_exit, METH_FASTCALL,
     "Return the client: pool.putconn(client). Never swallows an exception."},
    {"__class_getitem__", Py_GenericAlias, METH_O | METH_CLASS, "Lease[T], for annotations."},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef lease_members[] = {
    {"_pool", T_OBJECT, offsetof(Lease, pool), READONLY, NULL},
    {"_timeout", T_OBJECT, offsetof(Lease, timeout), READONLY, NULL},
    {"_client", T_OBJECT, offsetof(Lease, client), READONLY, NULL}, /* None unless entered */
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject LeaseType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "syncpool.Lease",
    .tp_basicsize = sizeof(Lease),
    .tp_dealloc = (destructor)lease_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Lease(pool, timeout=None): the context manager of Pool.connection(). __enter__ is\n"
              "pool.getconn(timeout), __exit__ is pool.putconn(client).",
    .tp_traverse = (traverseproc)lease_traverse,
    .tp_clear = (inquiry)lease_clear,
    .tp_methods = lease_methods,
    .tp_members = lease_members,
    .tp_vectorcall = lease_vectorcall,
};

/* -- module ---------------------------------------------------------------------------------------------------- */

static PyObject *
speedups_perf_counter(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(ignored))
{
    return PyFloat_FromDouble(ns_to_seconds(perf_counter_ns()));
}

static PyMethodDef module_methods[] = {
    {"perf_counter", speedups_perf_counter, METH_NOARGS,
     "The clock TimedCall reads, in seconds: the same as time.perf_counter()."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef speedups_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "syncpool._speedups",
    .m_doc = "Optional C accelerator for MonitoredClient's timed call path and Pool.connection()'s lease.",
    .m_size = -1,
    .m_methods = module_methods,
};

static int
add_type(PyObject *module, const char *name, PyTypeObject *type)
{
    Py_INCREF(type);
    if (PyModule_AddObject(module, name, (PyObject *)type) < 0) {
        Py_DECREF(type);
        return -1;
    }
    return 0;
}

PyMODINIT_FUNC
PyInit__speedups(void)
{
    PyObject *module;

    if (PyType_Ready(&AccumulatorType) < 0 || PyType_Ready(&TimedCallType) < 0 || PyType_Ready(&LeaseType) < 0) {
        return NULL;
    }
    str_record_late = PyUnicode_InternFromString("record_late");
    str_record_error = PyUnicode_InternFromString("record_error");
    str_getconn = PyUnicode_InternFromString("getconn");
    str_putconn = PyUnicode_InternFromString("putconn");
    str_timeout = PyUnicode_InternFromString("timeout");
    if (str_record_late == NULL || str_record_error == NULL || str_getconn == NULL || str_putconn == NULL
        || str_timeout == NULL) {
        return NULL;
    }
    module = PyModule_Create(&speedups_module);
    if (module == NULL) {
        return NULL;
    }
    if (add_type(module, "Accumulator", &AccumulatorType) < 0 || add_type(module, "TimedCall", &TimedCallType) < 0
        || add_type(module, "Lease", &LeaseType) < 0
        || PyModule_AddIntConstant(module, "BUCKETS", NBUCKETS) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
