/* One side of an L2 book in C: exchanges/book.py's BookSide, same API, same answers.

Why: Kraken's recorded pass (depth-1000 books, a checksum on every update) spent its time in
CPython's object work around the Python side (a dict and a sorted key list of floats, Level
tuples, the checksum text rebuilt as strings), not in the interpreter: compiling book.py with
mypyc left Kraken at 1.28x cryptofeed. Here a side is one array of levels sorted by key
(price for bids, -price for asks: the best level is last, so a change near the top moves the
fewest entries), found by binary search; sizes are C doubles and the exchange's original price
and size strings are kept as they came (their references). Prices and sizes parsed from text
equal Python's float(text) (see parse_amount); the Kraken checksum is computed from the kept
strings into a stack buffer and zlib's crc32 with no Python object built, each side's CRC kept
until a change reaches its levels and continued from the other's (crc32_combine); the top-N
list of (price, size) tuples is built only when a change reached it since it was last built.

exchanges/book.py keeps the pure-Python BookSide (the fallback where this does not compile,
and the reference tests/exchanges/test_book.py compares this one with).
*/
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <zlib.h>

typedef struct {
    double key;       /* price * sign: ascending in the array, the best level last */
    double size;
    PyObject *ptext;  /* the exchange's price text (a str, or None), a reference */
    PyObject *stext;
    PyObject *pair;   /* (price, size) as best() lists it, built on first use, or NULL */
    PyObject *level;  /* (size, price_text, size_text) as text() lists it, the same way */
} Lv;

typedef struct {
    PyObject_HEAD
    Lv *lv;
    Py_ssize_t n, cap;
    double sign;          /* 1.0 bids (descending prices), -1.0 asks */
    PyObject *top;        /* the best top_depth levels as [(price, size)], or NULL: rebuild */
    Py_ssize_t top_depth;
    Py_ssize_t touched;   /* rank (0 = best) of the best level changed since the last look */
    /* the last digits_crc32's digits over the best crc_depth levels (0: none kept): their
       CRC from 0 and their length */
    Py_ssize_t crc_depth;
    unsigned long crc_value;
    Py_ssize_t crc_len;
} Side;

static PyTypeObject SideType;

/* ---- text -> float ------------------------------------------------------------------ */

static const double POW10[23] = {1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10,
    1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

#if PY_LITTLE_ENDIAN
/* Up to 8 ASCII digits at once, as fast_float (github.com/fastfloat/fast_float) reads them:
   a long text's digits were a chain of multiply-adds, one per character, about 1.3 ns each
   (24 ns for Kraken's `1618678123.481570`, whose snapshots carry 2000 of those, 2000 prices
   and 2000 sizes), and a few operations on 8 bytes replace 8 of them. */
static inline int eight_digits(uint64_t v) {  /* every byte of an ASCII v is '0'..'9' */
    return !(((v + 0x4646464646464646ULL) | (v - 0x3030303030303030ULL)) &
             0x8080808080808080ULL);
}

static inline uint64_t eight_value(uint64_t v) {  /* the first byte the leading digit */
    const uint64_t mask = 0x000000FF000000FFULL;
    const uint64_t mul1 = 0x000F424000000064ULL;  /* 100 + (1000000 << 32) */
    const uint64_t mul2 = 0x0000271000000001ULL;  /* 1 + (10000 << 32) */
    v -= 0x3030303030303030ULL;
    v = (v * 10) + (v >> 8);
    return (((v & mask) * mul1) + (((v >> 16) & mask) * mul2)) >> 32;
}

/* The value of the k <= 8 digits that end at end, or 0 when one is not a digit. The 8 bytes
   before end are read, and the ones before the run count as '0': a compact ASCII str's text
   follows its header (40 bytes or more) in one allocation: they are readable bytes of it. */
static inline int digits8(const unsigned char *end, Py_ssize_t k, uint64_t *value) {
    uint64_t v;
    if (k == 0) {
        *value = 0;
        return 1;
    }
    memcpy(&v, end - 8, 8);
    if (k < 8) {
        uint64_t before = (1ULL << (8 * (8 - k))) - 1;  /* the bytes before the run */
        v = (v & ~before) | (0x3030303030303030ULL & before);
    }
    *value = eight_value(v);
    return eight_digits(v);
}

/* The same for k <= 16 digits. */
static inline int digits16(const unsigned char *end, Py_ssize_t k, uint64_t *value) {
    uint64_t high, low;
    if (k <= 8) return digits8(end, k, value);
    if (!(digits8(end - 8, k - 8, &high) & digits8(end, 8, &low))) return 0;
    *value = high * 100000000ULL + low;
    return 1;
}

/* parse_amount's exact path for a compact ASCII text of digits, at most one '.', at most 16
   digits on either side of it and 19 in all (so the integer m of all its digits fits 64
   bits), m <= 2**53: m / 10**(fraction digits), as below. 0 when the text is not that. */
static int short_amount(const unsigned char *s, Py_ssize_t len, double *out) {
    Py_ssize_t whole = 0, frac;
    while (whole < len && s[whole] != '.') whole++;  /* shorter than memchr's call */
    frac = whole < len ? len - whole - 1 : 0;
    uint64_t w = 0, f = 0;
    if (whole > 16 || frac > 16 || whole + frac > 19 || whole + frac == 0) return 0;
    if (!(digits16(s + whole, whole, &w) & digits16(s + len, frac, &f))) return 0;
    uint64_t m = w * (uint64_t)POW10[frac] + f;
    if (m > (1ULL << 53)) return 0;
    *out = (double)m / POW10[frac];
    return 1;
}
#endif

/* float(obj), with a fast exact path for plain decimal text: digits and at most one '.',
   whose significant digits (trailing fraction zeros dropped) make an integer m <= 2**53 and
   at most 22 fraction digits f. Then m and 10**f are exact doubles and m / 10**f is the one
   correctly rounded division: the correctly rounded value of the decimal, which is what
   float() (David Gay's strtod) returns. Anything else goes to float() itself. Returns 0, or
   -1 with float()'s exception set. Most texts take `short_amount`'s way to the same value. */
static int parse_amount(PyObject *obj, double *out) {
    if (PyUnicode_CheckExact(obj) && PyUnicode_IS_ASCII(obj)) {
#if PY_LITTLE_ENDIAN
        if (PyUnicode_IS_COMPACT_ASCII(obj) &&
                short_amount((const unsigned char *)PyUnicode_DATA(obj),
                             PyUnicode_GET_LENGTH(obj), out))
            return 0;
#endif
        const char *s = (const char *)PyUnicode_DATA(obj);
        Py_ssize_t len = PyUnicode_GET_LENGTH(obj), dot = -1, i, end, digits = 0;
        int plain = len > 0 && len < 64;
        for (i = 0; plain && i < len; i++) {
            char c = s[i];
            if (c == '.') {
                if (dot >= 0) plain = 0;
                dot = i;
            } else if (c >= '0' && c <= '9') {
                digits++;
            } else {
                plain = 0;
            }
        }
        if (plain && digits > 0) {
            unsigned long long m = 0;
            Py_ssize_t frac = 0;
            end = len;
            if (dot >= 0)
                while (end > dot + 1 && s[end - 1] == '0') end--;
            for (i = 0; i < end; i++) {
                if (i == dot) continue;
                m = m * 10 + (unsigned long long)(s[i] - '0');
                if (m > (1ULL << 53)) break;
                if (dot >= 0 && i > dot) frac++;
            }
            if (i == end && frac <= 22) {
                *out = (double)m / POW10[frac];
                return 0;
            }
        }
    }
    if (PyBool_Check(obj)) {  /* float(False) is 0.0: a JSON false would delete a level */
        PyErr_Format(PyExc_TypeError, "not a number: %R", obj);
        return -1;
    }
    PyObject *f = PyNumber_Float(obj);
    if (f == NULL) return -1;
    *out = PyFloat_AS_DOUBLE(f);
    Py_DECREF(f);
    return 0;
}

/* ---- the array ---------------------------------------------------------------------- */

static void release(Lv *lv, Py_ssize_t n) {
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_XDECREF(lv[i].ptext);
        Py_XDECREF(lv[i].stext);
        Py_XDECREF(lv[i].pair);
        Py_XDECREF(lv[i].level);
    }
}

static int reserve(Side *self, Py_ssize_t want) {
    if (want <= self->cap) return 0;
    Py_ssize_t cap = self->cap ? self->cap : 16;
    while (cap < want) cap *= 2;
    Lv *lv = PyMem_Realloc(self->lv, (size_t)cap * sizeof(Lv));
    if (lv == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    self->lv = lv;
    self->cap = cap;
    return 0;
}

/* index of the first key >= key (bisect_left) */
static Py_ssize_t find(const Side *self, double key) {
    Py_ssize_t lo = 0, hi = self->n;
    const Lv *lv = self->lv;
    while (lo < hi) {
        Py_ssize_t mid = (lo + hi) >> 1;
        if (lv[mid].key < key) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

static void changed(Side *self, Py_ssize_t rank) {
    if (rank < self->touched) self->touched = rank;
    if (rank < self->crc_depth) self->crc_depth = 0;
    if (self->top != NULL && rank < self->top_depth) Py_CLEAR(self->top);
}

/* set (size > 0) the level at price; the texts' references are taken (new ones given) */
static int put(Side *self, double price, double size, PyObject *ptext, PyObject *stext) {
    double key = price * self->sign;
    Py_ssize_t i = find(self, key);
    Lv *lv = self->lv;
    if (i < self->n && lv[i].key == key) {
        PyObject *op = lv[i].ptext, *os = lv[i].stext, *pair = lv[i].pair;
        PyObject *level = lv[i].level;
        lv[i].size = size;
        lv[i].ptext = ptext;
        lv[i].stext = stext;
        lv[i].pair = lv[i].level = NULL;
        Py_XDECREF(op);
        Py_XDECREF(os);
        Py_XDECREF(pair);
        Py_XDECREF(level);
    } else {
        if (reserve(self, self->n + 1) < 0) {
            Py_XDECREF(ptext);
            Py_XDECREF(stext);
            return -1;
        }
        lv = self->lv;
        memmove(lv + i + 1, lv + i, (size_t)(self->n - i) * sizeof(Lv));
        lv[i].key = key;
        lv[i].size = size;
        lv[i].ptext = ptext;
        lv[i].stext = stext;
        lv[i].pair = lv[i].level = NULL;
        self->n++;
    }
    changed(self, self->n - 1 - i);
    return 0;
}

/* the level as (size, price_text, size_text): a new reference to the one kept with it */
static PyObject *level_tuple(Lv *lv) {
    if (lv->level != NULL) return Py_NewRef(lv->level);
    PyObject *size = PyFloat_FromDouble(lv->size);
    if (size == NULL) return NULL;
    PyObject *p = lv->ptext ? lv->ptext : Py_None, *s = lv->stext ? lv->stext : Py_None;
    Py_INCREF(p);
    Py_INCREF(s);
    PyObject *t = PyTuple_New(3);
    if (t == NULL) {
        Py_DECREF(size);
        Py_DECREF(p);
        Py_DECREF(s);
        return NULL;
    }
    PyTuple_SET_ITEM(t, 0, size);
    PyTuple_SET_ITEM(t, 1, p);
    PyTuple_SET_ITEM(t, 2, s);
    lv->level = Py_NewRef(t);
    return t;
}

/* remove the level at index i, returning its Level tuple when want_level */
static PyObject *remove_at(Side *self, Py_ssize_t i, int want_level) {
    Lv *lv = self->lv;
    PyObject *level = NULL;
    if (want_level) {
        level = level_tuple(lv + i);
        if (level == NULL) return NULL;
    }
    Py_XDECREF(lv[i].ptext);
    Py_XDECREF(lv[i].stext);
    Py_XDECREF(lv[i].pair);
    Py_XDECREF(lv[i].level);
    memmove(lv + i, lv + i + 1, (size_t)(self->n - i - 1) * sizeof(Lv));
    self->n--;
    changed(self, self->n - i);
    if (!want_level) Py_RETURN_NONE;
    return level;
}

/* ---- Python API ----------------------------------------------------------------------- */

static int Side_init(Side *self, PyObject *args, PyObject *kwds) {
    static char *names[] = {"descending", NULL};
    int descending;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "p", names, &descending)) return -1;
    self->sign = descending ? 1.0 : -1.0;
    return 0;
}

static void Side_dealloc(Side *self) {
    release(self->lv, self->n);
    PyMem_Free(self->lv);
    Py_XDECREF(self->top);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static Py_ssize_t Side_len(Side *self) {
    return self->n;
}

static int price_of(PyObject *obj, double *price) {
    *price = PyFloat_AsDouble(obj);
    return (*price == -1.0 && PyErr_Occurred()) ? -1 : 0;
}

static int Side_contains(Side *self, PyObject *key) {
    double price;
    if (price_of(key, &price) < 0) return -1;
    double k = price * self->sign;
    Py_ssize_t i = find(self, k);
    return i < self->n && self->lv[i].key == k;
}

static PyObject *Side_getitem(Side *self, PyObject *key) {
    double price;
    if (price_of(key, &price) < 0) return NULL;
    double k = price * self->sign;
    Py_ssize_t i = find(self, k);
    if (i < self->n && self->lv[i].key == k) return level_tuple(self->lv + i);
    PyErr_SetObject(PyExc_KeyError, key);
    return NULL;
}

static PyObject *Side_set(Side *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2 || !PyTuple_Check(args[1]) || PyTuple_GET_SIZE(args[1]) != 3) {
        PyErr_SetString(PyExc_TypeError, "set(price, (size, price_text, size_text))");
        return NULL;
    }
    double price, size;
    PyObject *level = args[1];
    if (price_of(args[0], &price) < 0 || price_of(PyTuple_GET_ITEM(level, 0), &size) < 0)
        return NULL;
    PyObject *p = PyTuple_GET_ITEM(level, 1), *s = PyTuple_GET_ITEM(level, 2);
    Py_INCREF(p);
    Py_INCREF(s);
    if (put(self, price, size, p, s) < 0) return NULL;
    Py_RETURN_NONE;
}

static PyObject *Side_put(Side *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "put(price, size, price_text, size_text)");
        return NULL;
    }
    double price, size;
    if (price_of(args[0], &price) < 0 || price_of(args[1], &size) < 0) return NULL;
    Py_INCREF(args[2]);
    Py_INCREF(args[3]);
    if (put(self, price, size, args[2], args[3]) < 0) return NULL;
    Py_RETURN_NONE;
}

static PyObject *Side_pop(Side *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs < 1 || nargs > 2) {
        PyErr_SetString(PyExc_TypeError, "pop(price, default=None)");
        return NULL;
    }
    double price;
    if (price_of(args[0], &price) < 0) return NULL;
    double k = price * self->sign;
    Py_ssize_t i = find(self, k);
    if (i < self->n && self->lv[i].key == k) return remove_at(self, i, 1);
    PyObject *dflt = nargs == 2 ? args[1] : Py_None;
    Py_INCREF(dflt);
    return dflt;
}

static PyObject *Side_truncate(Side *self, PyObject *arg) {
    Py_ssize_t depth = PyLong_AsSsize_t(arg);
    if (depth == -1 && PyErr_Occurred()) return NULL;
    if (depth < 0) depth = 0;
    Py_ssize_t extra = self->n - depth;
    if (extra > 0) {
        release(self->lv, extra);
        memmove(self->lv, self->lv + extra, (size_t)depth * sizeof(Lv));
        self->n = depth;
        changed(self, depth);
    }
    Py_RETURN_NONE;
}

static void reset(Side *self) {
    Py_CLEAR(self->top);
    self->touched = 0;
    self->crc_depth = 0;
}

static void clear_side(Side *self) {
    Py_ssize_t n = self->n;
    self->n = 0;
    release(self->lv, n);
    reset(self);
}

static PyObject *Side_clear(Side *self, PyObject *unused) {
    clear_side(self);
    Py_RETURN_NONE;
}

static int by_key(const void *a, const void *b) {
    double x = ((const Lv *)a)->key, y = ((const Lv *)b)->key;
    return (x > y) - (x < y);
}

/* Sort lv[0:n] by key (the input held distinct prices). Snapshots come best first (Kraken,
   Coinbase, OKX...): a reversal, not a sort. */
static void sort_levels(Lv *lv, Py_ssize_t n) {
    Py_ssize_t i;
    for (i = 1; i < n && lv[i - 1].key < lv[i].key; i++) {}
    if (i >= n) return;
    for (i = 1; i < n && lv[i - 1].key > lv[i].key; i++) {}
    if (i >= n) {
        for (Py_ssize_t a = 0, b = n - 1; a < b; a++, b--) {
            Lv t = lv[a];
            lv[a] = lv[b];
            lv[b] = t;
        }
        return;
    }
    qsort(lv, (size_t)n, sizeof(Lv), by_key);
}

static void take_array(Side *self, Lv *lv, Py_ssize_t n, Py_ssize_t cap) {
    Lv *old = self->lv;
    Py_ssize_t old_n = self->n;
    self->lv = lv;
    self->n = n;
    self->cap = cap;
    release(old, old_n);
    PyMem_Free(old);
    reset(self);
}

static PyObject *Side_load(Side *self, PyObject *levels) {
    if (!PyDict_Check(levels)) {
        PyErr_SetString(PyExc_TypeError, "load(dict of price -> Level)");
        return NULL;
    }
    Py_ssize_t n = PyDict_GET_SIZE(levels), pos = 0, i = 0;
    Lv *lv = PyMem_Malloc((size_t)(n ? n : 1) * sizeof(Lv));
    if (lv == NULL) return PyErr_NoMemory();
    PyObject *key, *level;
    while (PyDict_Next(levels, &pos, &key, &level)) {
        double price, size;
        if (!PyTuple_Check(level) || PyTuple_GET_SIZE(level) != 3) {
            PyErr_SetString(PyExc_TypeError, "a Level is (size, price_text, size_text)");
            goto fail;
        }
        if (price_of(key, &price) < 0 || price_of(PyTuple_GET_ITEM(level, 0), &size) < 0)
            goto fail;
        lv[i].key = price * self->sign;
        lv[i].size = size;
        lv[i].ptext = Py_NewRef(PyTuple_GET_ITEM(level, 1));
        lv[i].stext = Py_NewRef(PyTuple_GET_ITEM(level, 2));
        lv[i].pair = NULL;
        lv[i].level = Py_NewRef(level);  /* the caller's Level: text() hands it back */
        i++;
    }
    sort_levels(lv, i);
    take_array(self, lv, i, n ? n : 1);
    Py_RETURN_NONE;
fail:
    release(lv, i);
    PyMem_Free(lv);
    return NULL;
}

static int ok_price(double price) {
    return 0.0 < price && price < Py_HUGE_VAL;
}

static int ok_size(double size) {
    return 0.0 <= size && size < Py_HUGE_VAL;
}

/* level[0] and level[1] of a [price_text, size_text, ...] level (new references) and their
   floats: 0, or 1 when they are not a finite price above 0 and a finite size of 0 or more;
   -1 with an exception set (nothing held). */
static int read_level(PyObject *level, PyObject **p, PyObject **s, double *price,
                      double *size) {
    if (PyList_CheckExact(level) && PyList_GET_SIZE(level) >= 2) {
        *p = Py_NewRef(PyList_GET_ITEM(level, 0));
        *s = Py_NewRef(PyList_GET_ITEM(level, 1));
    } else if (PyTuple_CheckExact(level) && PyTuple_GET_SIZE(level) >= 2) {
        *p = Py_NewRef(PyTuple_GET_ITEM(level, 0));
        *s = Py_NewRef(PyTuple_GET_ITEM(level, 1));
    } else {
        if ((*p = PySequence_GetItem(level, 0)) == NULL) return -1;
        if ((*s = PySequence_GetItem(level, 1)) == NULL) {
            Py_DECREF(*p);
            return -1;
        }
    }
    if (parse_amount(*p, price) < 0 || parse_amount(*s, size) < 0) {
        Py_DECREF(*p);
        Py_DECREF(*s);
        return -1;
    }
    return ok_price(*price) && ok_size(*size) ? 0 : 1;
}

/* (x, y), taking both references; NULL (both released) when either is NULL or no tuple */
static PyObject *pair_of(PyObject *x, PyObject *y) {
    PyObject *t = x && y ? PyTuple_New(2) : NULL;
    if (t == NULL) {
        Py_XDECREF(x);
        Py_XDECREF(y);
        return NULL;
    }
    PyTuple_SET_ITEM(t, 0, x);
    PyTuple_SET_ITEM(t, 1, y);
    return t;
}

static PyObject *float_pair(double a, double b) {
    PyObject *x = PyFloat_FromDouble(a);
    return pair_of(x, x ? PyFloat_FromDouble(b) : NULL);
}

static PyObject *bad_level(double price, double size) {
    return float_pair(price, size);
}

/* load_text([[price_text, size_text, ...], ...]): replace the side (a snapshot); zero sizes
   left out, a repeated price's last level kept. Returns None, or (price, size) of the first
   level whose price is not finite and above 0 or whose size is not finite and 0 or more,
   leaving the side as it was. */
static PyObject *Side_load_text(Side *self, PyObject *levels) {
    PyObject *seq = PySequence_Fast(levels, "load_text() needs a sequence of levels");
    if (seq == NULL) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq), i, count = 0;
    PyObject **items = PySequence_Fast_ITEMS(seq);
    Lv *lv = PyMem_Malloc((size_t)(n ? n : 1) * sizeof(Lv));
    PyObject *result = NULL;
    if (lv == NULL) {
        Py_DECREF(seq);
        return PyErr_NoMemory();
    }
    for (i = 0; i < n; i++) {
        PyObject *p, *s;
        double price, size;
        int bad = read_level(items[i], &p, &s, &price, &size);
        if (bad < 0) goto fail;
        if (bad) {
            Py_DECREF(p);
            Py_DECREF(s);
            result = bad_level(price, size);
            goto fail;
        }
        if (size != 0.0) {
            lv[count].key = price * self->sign;
            lv[count].size = size;
            lv[count].ptext = p;  /* the references read_level gave */
            lv[count].stext = s;
            lv[count].pair = lv[count].level = NULL;
            count++;
        } else {
            Py_DECREF(p);
            Py_DECREF(s);
        }
    }
    Py_DECREF(seq);
    /* A side sent in price order (every venue's snapshot) is taken as it is, reversed if
       need be; anything else (unordered, or a price repeated: the last level sent wins) is
       inserted level by level, as the pure side's dict does. */
    int up = 1, down = 1;
    for (i = 1; i < count && (up || down); i++) {
        if (!(lv[i - 1].key < lv[i].key)) up = 0;
        if (!(lv[i - 1].key > lv[i].key)) down = 0;
    }
    if (!up && !down) {
        Side tmp;
        memset(&tmp, 0, sizeof(tmp));
        tmp.sign = self->sign;
        for (Py_ssize_t a = 0; a < count; a++) {  /* put() takes lv[a]'s references */
            if (put(&tmp, lv[a].key * self->sign, lv[a].size, lv[a].ptext, lv[a].stext) < 0) {
                release(lv + a + 1, count - a - 1);
                release(tmp.lv, tmp.n);
                PyMem_Free(tmp.lv);
                PyMem_Free(lv);
                return NULL;
            }
        }
        PyMem_Free(lv);
        take_array(self, tmp.lv, tmp.n, tmp.cap);
        Py_RETURN_NONE;
    }
    sort_levels(lv, count);
    take_array(self, lv, count, n ? n : 1);
    Py_RETURN_NONE;
fail:
    Py_DECREF(seq);
    release(lv, count);
    PyMem_Free(lv);
    return result;
}

/* apply_text([[price_text, size_text, ...], ...]): absolute sizes in order, a zero size
   removes the level. Returns None, or (price, size) of the first bad level (see load_text),
   the levels before it applied: the caller drops the book. */
static PyObject *Side_apply_text(Side *self, PyObject *levels) {
    PyObject *seq = PySequence_Fast(levels, "apply_text() needs a sequence of levels");
    if (seq == NULL) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    PyObject **items = PySequence_Fast_ITEMS(seq);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *p, *s;
        double price, size;
        int bad = read_level(items[i], &p, &s, &price, &size);
        if (bad < 0) goto fail;
        if (bad || size == 0.0) {
            Py_DECREF(p);
            Py_DECREF(s);
            if (bad) {
                Py_DECREF(seq);
                return bad_level(price, size);
            }
            double k = price * self->sign;
            Py_ssize_t at = find(self, k);
            if (at < self->n && self->lv[at].key == k) {
                PyObject *r = remove_at(self, at, 0);
                Py_XDECREF(r);
            }
        } else if (put(self, price, size, p, s) < 0) {  /* put() takes p and s */
            goto fail;
        }
    }
    Py_DECREF(seq);
    Py_RETURN_NONE;
fail:
    Py_DECREF(seq);
    return NULL;
}

static PyObject *Side_take(Side *self, PyObject *other) {
    if (!PyObject_TypeCheck(other, &SideType)) {
        PyErr_SetString(PyExc_TypeError, "take(another BookSide)");
        return NULL;
    }
    Side *o = (Side *)other;
    if (o->sign != self->sign) {
        PyErr_SetString(PyExc_ValueError, "take(): a side of the other kind");
        return NULL;
    }
    Lv *lv = o->lv;
    Py_ssize_t n = o->n, cap = o->cap;
    o->lv = NULL;
    o->n = o->cap = 0;
    reset(o);
    take_array(self, lv, n, cap);
    Py_RETURN_NONE;
}

static PyObject *Side_best_price(Side *self, PyObject *unused) {
    if (self->n == 0) Py_RETURN_NONE;
    return PyFloat_FromDouble(self->lv[self->n - 1].key * self->sign);
}

/* the best depth levels as [(price, size)], best first (a new reference to the list kept) */
static PyObject *best_list(Side *self, Py_ssize_t depth) {
    if (depth < 0) depth = 0;
    if (self->top == NULL || self->top_depth != depth) {
        Py_ssize_t count = depth < self->n ? depth : self->n;
        PyObject *top = PyList_New(count);
        if (top == NULL) return NULL;
        Lv *lv = self->lv + self->n - 1;
        for (Py_ssize_t r = 0; r < count; r++, lv--) {
            if (lv->pair == NULL) {  /* kept with the level: most of the top is unchanged */
                lv->pair = float_pair(lv->key * self->sign, lv->size);
                if (lv->pair == NULL) {
                    Py_DECREF(top);
                    return NULL;
                }
            }
            PyList_SET_ITEM(top, r, Py_NewRef(lv->pair));
        }
        Py_XSETREF(self->top, top);
        self->top_depth = depth;
    }
    return Py_NewRef(self->top);
}

static PyObject *Side_best(Side *self, PyObject *arg) {
    Py_ssize_t depth = PyLong_AsSsize_t(arg);
    if (depth == -1 && PyErr_Occurred()) return NULL;
    return best_list(self, depth);
}

static PyObject *Side_text(Side *self, PyObject *arg) {
    Py_ssize_t depth = PyLong_AsSsize_t(arg);
    if (depth == -1 && PyErr_Occurred()) return NULL;
    if (depth < 0) depth = 0;
    Py_ssize_t count = depth < self->n ? depth : self->n;
    PyObject *out = PyList_New(count);
    if (out == NULL) return NULL;
    for (Py_ssize_t r = 0; r < count; r++) {
        PyObject *t = level_tuple(self->lv + self->n - 1 - r);
        if (t == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        PyList_SET_ITEM(out, r, t);
    }
    return out;
}

static PyObject *Side_items(Side *self, PyObject *unused) {
    PyObject *out = PyList_New(self->n);
    if (out == NULL) return NULL;
    for (Py_ssize_t r = 0; r < self->n; r++) {
        Lv *lv = self->lv + self->n - 1 - r;
        PyObject *level = level_tuple(lv);
        PyObject *price = level ? PyFloat_FromDouble(lv->key * self->sign) : NULL;
        PyObject *t = price ? PyTuple_New(2) : NULL;
        if (t == NULL) {
            Py_XDECREF(level);
            Py_XDECREF(price);
            Py_DECREF(out);
            return NULL;
        }
        PyTuple_SET_ITEM(t, 0, price);
        PyTuple_SET_ITEM(t, 1, level);
        PyList_SET_ITEM(out, r, t);
    }
    return out;
}

/* Append text with every '.' removed and its leading zeros (after that removal) dropped. */
static int digits_into(PyObject *text, char *buf, Py_ssize_t *at, Py_ssize_t room) {
    if (!PyUnicode_Check(text) || !PyUnicode_IS_ASCII(text)) {
        PyErr_SetString(PyExc_TypeError, "checksum text must be an ASCII str");
        return -1;
    }
    const char *s = (const char *)PyUnicode_DATA(text);
    Py_ssize_t len = PyUnicode_GET_LENGTH(text), i = 0, o = *at;
    while (i < len && (s[i] == '0' || s[i] == '.')) i++;
    if (o + (len - i) > room) return 1;
    for (; i < len; i++)
        if (s[i] != '.') buf[o++] = s[i];
    *at = o;
    return 0;
}

/* zlib's operator that continues a CRC over len bytes (crc32_combine_gen, zlib 1.2.12 and
   later), kept per length below COMBINE_LENGTHS: making one costs about what reading a side's
   ten levels again does (measured), applying one a tenth of it, and a side's ten levels come
   to a few hundred digits at most. 0 is no operator yet (x**n mod the CRC polynomial is
   never 0). One table for the process: the GIL serializes every use. */
#define COMBINE_LENGTHS 4096
#if ZLIB_VERNUM >= 0x12c0
static unsigned long combine_ops[COMBINE_LENGTHS];
#endif

/* crc32_combine(start, crc_value, crc_len): the CRC continued from start over the digits
   whose own CRC (from 0) the side keeps. */
static unsigned long continued(const Side *self, unsigned long start) {
    if (start == 0) return self->crc_value;
#if ZLIB_VERNUM >= 0x12c0
    Py_ssize_t len = self->crc_len;
    if (len < COMBINE_LENGTHS) {
        unsigned long op = combine_ops[len];
        if (op == 0) op = combine_ops[len] = crc32_combine_gen((z_off_t)len);
        return crc32_combine_op(start, self->crc_value, op) & 0xffffffffUL;
    }
#endif
    return crc32_combine(start, self->crc_value, (z_off_t)self->crc_len) & 0xffffffffUL;
}

/* zlib.crc32 continued from start over the best depth levels' price then size text, each
   with the decimal point and leading zeros removed (Kraken's checksum: asks, then bids from
   the asks' CRC), into *out: 0, or -1 with an exception set. No Python object is built: the
   text goes through a buffer. The side keeps its digits' CRC from 0 and continues it from
   start (`continued`), so a side no change reached is not read again even when the start
   changed: Kraken's bids, which start from the asks' CRC, were read again on every update
   that reached the top asks. */
static int side_digits_crc32(Side *self, Py_ssize_t depth, unsigned long start,
                             unsigned long *out) {
    if (depth > 0 && depth == self->crc_depth) {  /* no change reached those levels since */
        *out = continued(self, start);
        return 0;
    }
    unsigned long crc = 0;
    char buf[2048];
    Py_ssize_t at = 0, total = 0, count = depth < self->n ? depth : self->n;
    for (Py_ssize_t r = 0; r < count; r++) {
        const Lv *lv = self->lv + self->n - 1 - r;
        for (int k = 0; k < 2; k++) {
            PyObject *text = k ? lv->stext : lv->ptext;
            int full = digits_into(text, buf, &at, (Py_ssize_t)sizeof(buf));
            if (full < 0) return -1;
            if (full) {  /* flush and retry: a text longer than the buffer goes alone */
                crc = crc32(crc, (const Bytef *)buf, (uInt)at);
                total += at;
                at = 0;
                Py_ssize_t len = PyUnicode_GET_LENGTH(text);
                if (len > (Py_ssize_t)sizeof(buf)) {
                    PyObject *b = PyUnicode_AsASCIIString(text);
                    if (b == NULL) return -1;
                    const char *s = PyBytes_AS_STRING(b);
                    Py_ssize_t i = 0;
                    while (i < len && (s[i] == '0' || s[i] == '.')) i++;
                    for (; i < len; i++) {
                        if (s[i] != '.') {
                            crc = crc32(crc, (const Bytef *)s + i, 1);
                            total++;
                        }
                    }
                    Py_DECREF(b);
                } else if (digits_into(text, buf, &at, (Py_ssize_t)sizeof(buf)) < 0) {
                    return -1;
                }
            }
        }
    }
    if (at) crc = crc32(crc, (const Bytef *)buf, (uInt)at);
    self->crc_depth = depth > 0 ? depth : 0;
    self->crc_value = crc;
    self->crc_len = total + at;
    *out = continued(self, start);
    return 0;
}

/* digits_crc32(n, crc): side_digits_crc32 over the best n levels from crc. */
static PyObject *Side_digits_crc32(Side *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "digits_crc32(n, crc)");
        return NULL;
    }
    Py_ssize_t depth = PyLong_AsSsize_t(args[0]);
    if (depth == -1 && PyErr_Occurred()) return NULL;
    unsigned long crc = PyLong_AsUnsignedLongMask(args[1]);
    if (crc == (unsigned long)-1 && PyErr_Occurred()) return NULL;
    if (side_digits_crc32(self, depth, crc & 0xffffffffUL, &crc) < 0) return NULL;
    return PyLong_FromUnsignedLong(crc);
}

#define UNTOUCHED ((Py_ssize_t)1 << 62)  /* book.py's UNTOUCHED: no change since the look */

/* look(depth): True when a change reached the best depth levels since the last look (or
   since the side was cleared or loaded); starts a new watch. */
static PyObject *Side_look(Side *self, PyObject *arg) {
    Py_ssize_t depth = PyLong_AsSsize_t(arg);
    if (depth == -1 && PyErr_Occurred()) return NULL;
    int changed = self->touched < depth;
    self->touched = UNTOUCHED;
    return PyBool_FromLong(changed);
}

/* The arguments (bids, asks, depth) of a function over both sides: 0, or -1 with TypeError
   (usage) or the depth's error set. */
static int sides_and_depth(PyObject *const *args, Py_ssize_t nargs, const char *usage,
                           Side **bids, Side **asks, Py_ssize_t *depth) {
    if (nargs != 3 || !PyObject_TypeCheck(args[0], &SideType) ||
            !PyObject_TypeCheck(args[1], &SideType)) {
        PyErr_SetString(PyExc_TypeError, usage);
        return -1;
    }
    *bids = (Side *)args[0];
    *asks = (Side *)args[1];
    *depth = PyLong_AsSsize_t(args[2]);
    return (*depth == -1 && PyErr_Occurred()) ? -1 : 0;
}

/* changed_top(bids, asks, depth): book.py's `_changed_top` in C: both sides look (each
   starts a new watch); None when no change reached the best depth levels of either, else
   (bids.best(depth), asks.best(depth)). One call where a connector made four. */
static PyObject *changed_top(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    Side *bids, *asks;
    Py_ssize_t depth;
    if (sides_and_depth(args, nargs, "changed_top(bids, asks, depth)", &bids, &asks,
                        &depth) < 0)
        return NULL;
    int changed = bids->touched < depth || asks->touched < depth;
    bids->touched = asks->touched = UNTOUCHED;
    if (!changed) Py_RETURN_NONE;
    PyObject *b = best_list(bids, depth);
    return pair_of(b, b ? best_list(asks, depth) : NULL);
}

static PyMemberDef Side_members[] = {
    {"touched", T_PYSSIZET, offsetof(Side, touched), 0,
     "rank (0 = best) of the best level changed since the last look"},
    {"sign", T_DOUBLE, offsetof(Side, sign), READONLY, "1.0 bids, -1.0 asks"},
    {NULL}
};

static PyMethodDef Side_methods[] = {
    {"set", (PyCFunction)(void (*)(void))Side_set, METH_FASTCALL,
     "set(price, level): add or replace the level at price (a non-zero size)"},
    {"put", (PyCFunction)(void (*)(void))Side_put, METH_FASTCALL,
     "put(price, size, price_text, size_text): set() without the Level tuple"},
    {"pop", (PyCFunction)(void (*)(void))Side_pop, METH_FASTCALL,
     "pop(price, default=None): remove the level at price; its Level, or default"},
    {"truncate", (PyCFunction)Side_truncate, METH_O, "keep the best depth levels"},
    {"clear", (PyCFunction)Side_clear, METH_NOARGS, "remove every level"},
    {"load", (PyCFunction)Side_load, METH_O, "replace the side from price -> Level"},
    {"load_text", (PyCFunction)Side_load_text, METH_O,
     "replace the side from [[price_text, size_text], ...]; None or the bad (price, size)"},
    {"apply_text", (PyCFunction)Side_apply_text, METH_O,
     "apply [[price_text, size_text], ...]; None or the bad (price, size)"},
    {"take", (PyCFunction)Side_take, METH_O, "take another side's levels (it is emptied)"},
    {"best_price", (PyCFunction)Side_best_price, METH_NOARGS, "the best price or None"},
    {"best", (PyCFunction)Side_best, METH_O,
     "the best depth levels as [(price, size)], best first; the same list until a change"},
    {"text", (PyCFunction)Side_text, METH_O, "the best depth levels as Level tuples"},
    {"items", (PyCFunction)Side_items, METH_NOARGS, "every level as (price, Level), best first"},
    {"look", (PyCFunction)Side_look, METH_O,
     "look(depth): whether a change reached the best depth levels since the last look"},
    {"digits_crc32", (PyCFunction)(void (*)(void))Side_digits_crc32, METH_FASTCALL,
     "crc32 continued over the best n levels' digits (Kraken's checksum)"},
    {NULL}
};

static PySequenceMethods Side_as_sequence = {
    .sq_length = (lenfunc)Side_len,
    .sq_contains = (objobjproc)Side_contains,
};

static PyMappingMethods Side_as_mapping = {
    .mp_length = (lenfunc)Side_len,
    .mp_subscript = (binaryfunc)Side_getitem,
};

static PyTypeObject SideType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "exchanges._book.BookSide",
    .tp_doc = "One side of an L2 book: exchanges/book.py's BookSide in C.",
    .tp_basicsize = sizeof(Side),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Side_init,
    .tp_dealloc = (destructor)Side_dealloc,
    .tp_methods = Side_methods,
    .tp_members = Side_members,
    .tp_as_sequence = &Side_as_sequence,
    .tp_as_mapping = &Side_as_mapping,
};

static PyObject *parse_float(PyObject *module, PyObject *text) {
    double v;
    if (parse_amount(text, &v) < 0) return NULL;
    return PyFloat_FromDouble(v);
}

/* max_float(levels, index, start): the largest float(level[index]) of levels, and start
   (None: the first level's). As max() would pick it: a later value replaces the current
   only when greater. Kraken's book levels carry their time as text at index 2. */
static PyObject *max_float(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "max_float(levels, index, start)");
        return NULL;
    }
    Py_ssize_t index = PyLong_AsSsize_t(args[1]);
    if (index == -1 && PyErr_Occurred()) return NULL;
    int have = args[2] != Py_None;
    double best = 0.0;
    if (have && price_of(args[2], &best) < 0) return NULL;
    PyObject *seq = PySequence_Fast(args[0], "max_float() needs a sequence of levels");
    if (seq == NULL) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    PyObject **items = PySequence_Fast_ITEMS(seq);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *level = items[i], *item;
        double v;
        int failed;
        if (PyList_CheckExact(level) && index >= 0 && index < PyList_GET_SIZE(level)) {
            failed = parse_amount(PyList_GET_ITEM(level, index), &v);
        } else {
            item = PySequence_GetItem(level, index);
            failed = item == NULL ? -1 : parse_amount(item, &v);
            Py_XDECREF(item);
        }
        if (failed < 0) {
            Py_DECREF(seq);
            return NULL;
        }
        if (!have || v > best) {
            best = v;
            have = 1;
        }
    }
    Py_DECREF(seq);
    if (!have) Py_RETURN_NONE;
    return PyFloat_FromDouble(best);
}

/* Append one text (an ASCII str) to the buffer, after a ':' unless it is the first; the
   buffer goes through crc32 whenever the next text would not fit. 0, or 1: not ASCII text. */
static int joined_into(PyObject *text, char *buf, Py_ssize_t room, Py_ssize_t *at,
                       unsigned long *crc, int *first) {
    if (text == NULL || !PyUnicode_CheckExact(text) || !PyUnicode_IS_ASCII(text)) return 1;
    const char *s = (const char *)PyUnicode_DATA(text);
    Py_ssize_t len = PyUnicode_GET_LENGTH(text);
    if (*at + len + 1 > room) {
        *crc = crc32(*crc, (const Bytef *)buf, (uInt)*at);
        *at = 0;
    }
    if (!*first) {
        if (*at + 1 > room) {
            *crc = crc32(*crc, (const Bytef *)buf, (uInt)*at);
            *at = 0;
        }
        buf[(*at)++] = ':';
    }
    *first = 0;
    if (len > room - *at) {  /* longer than the buffer: on its own */
        *crc = crc32(*crc, (const Bytef *)buf, (uInt)*at);
        *at = 0;
        *crc = crc32(*crc, (const Bytef *)s, (uInt)len);
        return 0;
    }
    memcpy(buf + *at, s, (size_t)len);
    *at += len;
    return 0;
}

/* interleaved_crc32(bids, asks, depth): the signed CRC32 of bidPrice:bidSize:askPrice:
   askSize:... over the best depth levels of each side from their original text, level by
   level, the longer side going on alone (OKX's and Bitfinex's checksum: Bitfinex's ask
   size text is its negative amount as sent). None when a text is not an ASCII str (the
   caller computes it in Python, with Python's error). */
static PyObject *interleaved_crc32(PyObject *module, PyObject *const *args,
                                   Py_ssize_t nargs) {
    Side *bids, *asks;
    Py_ssize_t depth;
    if (sides_and_depth(args, nargs, "interleaved_crc32(bids, asks, depth)", &bids, &asks,
                        &depth) < 0)
        return NULL;
    Py_ssize_t nb = depth < bids->n ? depth : bids->n, na = depth < asks->n ? depth : asks->n;
    char buf[4096];
    Py_ssize_t at = 0;
    unsigned long crc = 0;
    int first = 1;
    for (Py_ssize_t r = 0; r < nb || r < na; r++) {
        for (int k = 0; k < 2; k++) {
            Side *side = k ? asks : bids;
            if (r >= (k ? na : nb)) continue;
            const Lv *lv = side->lv + side->n - 1 - r;
            if (joined_into(lv->ptext, buf, sizeof(buf), &at, &crc, &first) ||
                    joined_into(lv->stext, buf, sizeof(buf), &at, &crc, &first))
                Py_RETURN_NONE;
        }
    }
    if (at) crc = crc32(crc, (const Bytef *)buf, (uInt)at);
    return PyLong_FromLong(crc & 0x80000000UL ? (long)crc - 0x100000000L : (long)crc);
}

/* index of the first c in s[from:len], or -1 (str.find of one ASCII character) */
static Py_ssize_t find_char(const char *s, Py_ssize_t len, char c, Py_ssize_t from) {
    const char *at = from < len ? memchr(s + from, c, (size_t)(len - from)) : NULL;
    return at == NULL ? -1 : at - s;
}

/* ---- Bitfinex's counted levels ---------------------------------------------------------- */

/* A decoded number as the float float() gives it: a float as it is, an int converted (an
   int too large for a double raises OverflowError, as float() does); anything else (a
   bool, a string, null) raises ValueError naming it. 0, or -1 with the exception set. */
static int counted_number(PyObject *value, double *out) {
    if (PyFloat_CheckExact(value)) {
        *out = PyFloat_AS_DOUBLE(value);
        return 0;
    }
    if (PyLong_CheckExact(value)) {
        *out = PyLong_AsDouble(value);
        return (*out == -1.0 && PyErr_Occurred()) ? -1 : 0;
    }
    PyErr_Format(PyExc_ValueError, "book value %R", value);
    return -1;
}

/* The levels of one side of a counted snapshot, in the order sent: size 0 marks a level
   that deletes (COUNT 0, or AMOUNT 0); its texts are not kept. */
typedef struct {
    Lv *lv;
    Py_ssize_t n;
} Run;

static void release_run(Run *run) {
    release(run->lv, run->n);
    PyMem_Free(run->lv);
    run->lv = NULL;
    run->n = 0;
}

/* The run as a side's array: levels in key order with the deletes applied. A side sent in
   price order (Bitfinex's snapshots: best first) is taken as it is, reversed; anything else
   (a price repeated, out of order) is applied level by level into a new array, as the pure
   twin's dict does it. 0, or -1 with an exception set (the run is released either way). */
static int run_into(Side *side, Run *run) {
    Lv *lv = run->lv;
    Py_ssize_t n = run->n, i, kept = 0;
    int up = 1, down = 1;
    for (i = 1; i < n && (up || down); i++) {
        if (!(lv[i - 1].key < lv[i].key)) up = 0;
        if (!(lv[i - 1].key > lv[i].key)) down = 0;
    }
    if (up || down) {  /* no price twice: a delete removes nothing */
        for (i = 0; i < n; i++)
            if (lv[i].size != 0.0) lv[kept++] = lv[i];
        run->n = 0;
        sort_levels(lv, kept);
        take_array(side, lv, kept, n ? n : 1);
        run->lv = NULL;
        return 0;
    }
    Side tmp;
    memset(&tmp, 0, sizeof(tmp));
    tmp.sign = side->sign;
    for (i = 0; i < n; i++) {
        double key = lv[i].key;
        if (lv[i].size != 0.0) {  /* put() takes the level's text references */
            PyObject *p = lv[i].ptext, *s = lv[i].stext;
            lv[i].ptext = lv[i].stext = NULL;
            if (put(&tmp, key * side->sign, lv[i].size, p, s) < 0) {
                release(tmp.lv, tmp.n);
                PyMem_Free(tmp.lv);
                release_run(run);
                return -1;
            }
        } else {
            Py_ssize_t at = find(&tmp, key);
            if (at < tmp.n && tmp.lv[at].key == key) {
                PyObject *r = remove_at(&tmp, at, 0);
                Py_XDECREF(r);
            }
        }
    }
    release_run(run);
    take_array(side, tmp.lv, tmp.n, tmp.cap);
    return 0;
}

/* load_counted(bids, asks, text, levels): replace both sides from a book snapshot written
   [[PRICE,COUNT,AMOUNT],...] (Bitfinex's), book.py's `_load_counted` in C (its docstring has
   the rules). `levels` is the decoded list and `text` the frame it came from: the numbers
   are the decoded ones, the texts kept are cut from the frame. Returns None; the (price,
   size) of the first level that is not a finite price and size above 0 (both sides left
   empty); NotImplemented for a text that is not ASCII (the caller uses the pure twin).
   Raises ValueError for a frame whose text or levels are not that shape (sides empty). */
static PyObject *load_counted(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 4 || !PyObject_TypeCheck(args[0], &SideType) ||
            !PyObject_TypeCheck(args[1], &SideType) || !PyUnicode_CheckExact(args[2])) {
        PyErr_SetString(PyExc_TypeError, "load_counted(bids, asks, text, levels)");
        return NULL;
    }
    Side *sides[2] = {(Side *)args[0], (Side *)args[1]};
    PyObject *text = args[2], *levels = args[3], *result = NULL;
    if (!PyUnicode_IS_ASCII(text)) Py_RETURN_NOTIMPLEMENTED;
    clear_side(sides[0]);
    clear_side(sides[1]);
    if (!PyList_CheckExact(levels)) {
        PyErr_Format(PyExc_ValueError, "book message %R", levels);
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(levels), len = PyUnicode_GET_LENGTH(text);
    const char *s = (const char *)PyUnicode_DATA(text);
    Run runs[2] = {{NULL, 0}, {NULL, 0}};
    Py_ssize_t *cuts = NULL;  /* token k is s[cuts[2k]:cuts[2k+1]] */
    if (n == 0) Py_RETURN_NONE;
    /* The tokens between the first "[[" and the "]]" after it, separated by "," and "],["
       (book.py's `counted_tokens`: replace, then split, reads the same pieces) */
    Py_ssize_t start = -1, end = -1, i, tokens = 0, joins = 0, from;
    for (i = find_char(s, len, '[', 0); i >= 0 && i + 1 < len; i = find_char(s, len, '[', i + 1))
        if (s[i + 1] == '[') {
            start = i + 2;
            break;
        }
    for (i = start < 0 ? -1 : find_char(s, len, ']', start); i >= 0 && i + 1 < len;
            i = find_char(s, len, ']', i + 1))
        if (s[i + 1] == ']') {
            end = i;
            break;
        }
    if (end >= 0) {
        cuts = PyMem_Malloc((size_t)(6 * n) * sizeof(Py_ssize_t));
        if (cuts == NULL) return PyErr_NoMemory();
        /* From comma to comma: a comma between ']' and '[' (both inside the text) ends a
           token at its ']' and the next starts after its '[', as the "],[" replace does: the
           character before a token is never that ']' (it is the '[' or ',' before it). */
        from = start;
        while (tokens <= 3 * n) {
            Py_ssize_t c = find_char(s, end, ',', from), stop = c;
            int join = c > from && c + 1 < end && s[c - 1] == ']' && s[c + 1] == '[';
            if (c < 0) stop = end;
            else if (join) stop = c - 1;
            if (tokens < 3 * n) {
                cuts[2 * tokens] = from;
                cuts[2 * tokens + 1] = stop;
            }
            tokens++;
            if (c < 0) break;
            joins += join;
            from = join ? c + 2 : c + 1;
        }
    }
    if (end < 0 || tokens != 3 * n || joins != n - 1) {
        PyErr_Format(PyExc_ValueError, "book snapshot text is not %zd levels of 3 numbers", n);
        goto done;
    }
    for (int k = 0; k < 2; k++) {
        runs[k].lv = PyMem_Malloc((size_t)n * sizeof(Lv));
        if (runs[k].lv == NULL) {
            PyErr_NoMemory();
            goto done;
        }
    }
    for (i = 0; i < n; i++) {
        PyObject *level = PyList_GET_ITEM(levels, i);
        if (!PyList_CheckExact(level) || PyList_GET_SIZE(level) != 3) {
            PyErr_Format(PyExc_ValueError, "book level %R", level);
            goto done;
        }
        double price, amount;
        if (counted_number(PyList_GET_ITEM(level, 0), &price) < 0 ||
                counted_number(PyList_GET_ITEM(level, 2), &amount) < 0)
            goto done;
        Py_ssize_t a0 = cuts[6 * i + 4], a1 = cuts[6 * i + 5];
        int ask = a1 > a0 && s[a0] == '-';
        PyObject *count = PyList_GET_ITEM(level, 1);
        if (!PyLong_CheckExact(count)) {
            PyErr_Format(PyExc_ValueError, "book level count %R", count);
            goto done;
        }
        int overflow;
        long c = PyLong_AsLongAndOverflow(count, &overflow);
        double size = ask ? -amount : amount;
        Side *side = sides[ask];
        Lv *lv = runs[ask].lv + runs[ask].n;
        lv->key = price * side->sign;
        lv->ptext = lv->stext = lv->pair = lv->level = NULL;
        if ((c == 0 && !overflow) || size == 0.0) {
            lv->size = 0.0;  /* deletes */
        } else {
            if (!(ok_price(price) && 0.0 < size && size < Py_HUGE_VAL)) {
                result = bad_level(price, size);
                goto done;
            }
            lv->size = size;
            lv->ptext = PyUnicode_Substring(text, cuts[6 * i], cuts[6 * i + 1]);
            lv->stext = lv->ptext ? PyUnicode_Substring(text, a0, a1) : NULL;
            if (lv->stext == NULL) {
                Py_XDECREF(lv->ptext);
                goto done;
            }
        }
        runs[ask].n++;
    }
    if (run_into(sides[0], &runs[0]) < 0 || run_into(sides[1], &runs[1]) < 0) {
        clear_side(sides[0]);
        goto done;
    }
    result = Py_NewRef(Py_None);
done:
    release_run(&runs[0]);
    release_run(&runs[1]);
    PyMem_Free(cuts);
    return result;
}

/* apply_counted(bids, asks, text, update): one book update written [CHAN_ID,[PRICE,COUNT,
   AMOUNT],SEQ] (Bitfinex's), book.py's `_apply_counted` in C (its docstring has the rules
   and how the texts are cut). Returns None; the (price, size) of a level that
   is not a finite price above 0 and a finite size (nothing changed); NotImplemented for a
   text that is not ASCII (the caller uses the pure twin). ValueError for an update that is
   not three numbers, or whose COUNT text is not the decoded integer where it deletes. */
static PyObject *apply_counted(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 4 || !PyObject_TypeCheck(args[0], &SideType) ||
            !PyObject_TypeCheck(args[1], &SideType) || !PyUnicode_CheckExact(args[2]) ||
            !PyList_CheckExact(args[3])) {
        PyErr_SetString(PyExc_TypeError, "apply_counted(bids, asks, text, update: list)");
        return NULL;
    }
    PyObject *text = args[2], *update = args[3];
    if (!PyUnicode_IS_ASCII(text)) Py_RETURN_NOTIMPLEMENTED;
    if (PyList_GET_SIZE(update) != 3) {
        PyErr_Format(PyExc_ValueError, "book update of %zd fields: %S",
                     PyList_GET_SIZE(update), update);
        return NULL;
    }
    double price, amount;
    if (counted_number(PyList_GET_ITEM(update, 0), &price) < 0 ||
            counted_number(PyList_GET_ITEM(update, 2), &amount) < 0)
        return NULL;
    /* Two numbers decoded: the inner array's '[', two commas and ']' are in the text */
    const char *s = (const char *)PyUnicode_DATA(text);
    Py_ssize_t len = PyUnicode_GET_LENGTH(text);
    Py_ssize_t start = find_char(s, len, '[', 1) + 1;
    Py_ssize_t first = find_char(s, len, ',', start);
    Py_ssize_t second = find_char(s, len, ',', first + 1);
    Py_ssize_t close = second < 0 ? -1 : find_char(s, len, ']', second);
    if (start <= 0 || first < 0 || second < 0 || close < 0) {  /* not with 2 numbers decoded */
        PyErr_Format(PyExc_ValueError, "book update text %R", text);
        return NULL;
    }
    int deletes = second == first + 2 && s[first + 1] == '0';  /* the count's text is "0" */
    PyObject *count = PyList_GET_ITEM(update, 1);
    int overflow = 0;
    long c = PyLong_CheckExact(count) ? PyLong_AsLongAndOverflow(count, &overflow) : -1;
    if (!PyLong_CheckExact(count) || deletes != (c == 0 && !overflow)) {
        PyObject *written = PyUnicode_Substring(text, first + 1, second);
        if (written != NULL) {
            PyErr_Format(PyExc_ValueError, "book update count %R is not %R", written, count);
            Py_DECREF(written);
        }
        return NULL;
    }
    int ask = close > second + 1 && s[second + 1] == '-';
    Side *side = (Side *)args[ask];
    double key = price * side->sign;
    if (!deletes) {
        double size = ask ? -amount : amount;
        if (!(ok_price(price) && ok_size(size))) return bad_level(price, size);
        if (size != 0.0) {
            PyObject *p = PyUnicode_Substring(text, start, first);
            PyObject *a = p ? PyUnicode_Substring(text, second + 1, close) : NULL;
            if (a == NULL) {
                Py_XDECREF(p);
                return NULL;
            }
            if (put(side, price, size, p, a) < 0) return NULL;  /* put() takes p and a */
            Py_RETURN_NONE;
        }
    }
    Py_ssize_t at = find(side, key);
    if (at < side->n && side->lv[at].key == key) {
        PyObject *r = remove_at(side, at, 0);
        Py_XDECREF(r);
    }
    Py_RETURN_NONE;
}

/* asks_bids_digits_crc32(asks, bids, depth): Kraken's checksum of a book in one call, what
   bids.digits_crc32(depth, asks.digits_crc32(depth, 0)) gives: one call per update instead
   of two, and no int in between. */
static PyObject *asks_bids_digits_crc32(PyObject *module, PyObject *const *args,
                                        Py_ssize_t nargs) {
    if (nargs != 3 || !PyObject_TypeCheck(args[0], &SideType) ||
            !PyObject_TypeCheck(args[1], &SideType)) {
        PyErr_SetString(PyExc_TypeError, "asks_bids_digits_crc32(asks, bids, depth)");
        return NULL;
    }
    Py_ssize_t depth = PyLong_AsSsize_t(args[2]);
    if (depth == -1 && PyErr_Occurred()) return NULL;
    unsigned long crc;
    if (side_digits_crc32((Side *)args[0], depth, 0, &crc) < 0 ||
            side_digits_crc32((Side *)args[1], depth, crc, &crc) < 0)
        return NULL;
    return PyLong_FromUnsignedLong(crc);
}

static PyMethodDef module_methods[] = {
    {"asks_bids_digits_crc32", (PyCFunction)(void (*)(void))asks_bids_digits_crc32,
     METH_FASTCALL, "asks_bids_digits_crc32(asks, bids, depth): Kraken's checksum"},
    {"changed_top", (PyCFunction)(void (*)(void))changed_top, METH_FASTCALL,
     "changed_top(bids, asks, depth): None, or both sides' best lists after a change"},
    {"apply_counted", (PyCFunction)(void (*)(void))apply_counted, METH_FASTCALL,
     "apply_counted(bids, asks, text, update): one Bitfinex book update"},
    {"load_counted", (PyCFunction)(void (*)(void))load_counted, METH_FASTCALL,
     "load_counted(bids, asks, text, levels): both sides from Bitfinex's snapshot"},
    {"interleaved_crc32", (PyCFunction)(void (*)(void))interleaved_crc32, METH_FASTCALL,
     "interleaved_crc32(bids, asks, depth): OKX's and Bitfinex's signed checksum"},
    {"max_float", (PyCFunction)(void (*)(void))max_float, METH_FASTCALL,
     "max_float(levels, index, start): the largest float(level[index]), and start"},
    {"parse_float", parse_float, METH_O, "float(text), as the book parses levels (tests)"},
    {NULL}
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "exchanges._book",
    "One side of an L2 book in C (exchanges/book.py's BookSide).", -1, module_methods,
};

PyMODINIT_FUNC PyInit__book(void) {
    if (PyType_Ready(&SideType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    if (PyModule_AddObjectRef(m, "BookSide", (PyObject *)&SideType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
