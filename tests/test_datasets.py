"""Tests of skh2t.datasets: Fashion-MNIST loading, IDX parsing and downloading."""

import gzip
import hashlib
import http.client
import io
import os
import struct
from urllib.error import URLError

import numpy as np
import pytest

from skh2t.datasets import _download, _fashion_mnist, get_data_home, load_fashion_mnist
from skh2t.datasets._idx import read_idx

DEBIAN_DIR = _fashion_mnist.DEBIAN_DIR
OFFICIAL_NAMES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
has_debian_data = pytest.mark.skipif(
    not os.path.isfile(os.path.join(DEBIAN_DIR, "train-images-idx3-ubyte.gz")),
    reason="Debian package dataset-fashion-mnist is not installed",
)


# --- helpers -----------------------------------------------------------------


def idx_bytes(array, *, dtype_code=0x08, compress=True):
    """Serialize ``array`` in the IDX format (big-endian), gzipped by default."""
    array = np.asarray(array)
    header = bytes([0, 0, dtype_code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    raw = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    return gzip.compress(raw, mtime=0) if compress else raw


def fake_split(n, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = (np.arange(n) % 10).astype(np.uint8)
    return images, labels


def write_fake(folder, n_train=7, n_test=3, *, compress=True, splits=("train", "test")):
    """Write a small fake Fashion-MNIST (n_train / n_test images) into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    sizes = {"train": n_train, "test": n_test}
    suffix = ".gz" if compress else ""
    for split in splits:
        images, labels = fake_split(sizes[split], seed=sizes[split])
        image_stem, label_stem = FILES[split]
        (folder / (image_stem + suffix)).write_bytes(idx_bytes(images, compress=compress))
        (folder / (label_stem + suffix)).write_bytes(idx_bytes(labels, compress=compress))
    return folder


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """No SKH2T_DATA, an empty HOME and an empty fake Debian folder."""
    monkeypatch.delenv("SKH2T_DATA", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr(_fashion_mnist, "DEBIAN_DIR", str(tmp_path / "debian" / "fashion-mnist"))
    return tmp_path


# --- the real data set, from the Debian package ----------------------------------


@pytest.fixture(scope="module")
def debian_train():
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("SKH2T_DATA", raising=False)
        mp.setenv("HOME", "/nonexistent-skh2t-home")
        return load_fashion_mnist(subset="train")


@has_debian_data
def test_debian_train_set(debian_train):
    bunch = debian_train
    assert bunch.images.shape == (60000, 28, 28)
    assert bunch.images.dtype == np.uint8
    assert bunch.images.flags.writeable
    assert bunch.data.shape == (60000, 784)
    assert np.shares_memory(bunch.data, bunch.images)
    assert bunch.target.shape == (60000,)
    assert bunch.target.dtype == np.int64
    assert bunch.target_names.tolist() == OFFICIAL_NAMES
    assert np.bincount(bunch.target).tolist() == [6000] * 10
    assert bunch.images.min() == 0
    assert bunch.images.max() == 255
    assert all(f.startswith(DEBIAN_DIR) for f in bunch.filenames)
    assert "Fashion-MNIST" in bunch.DESCR


@pytest.mark.slow
@has_debian_data
def test_debian_test_set_and_all(debian_train, monkeypatch):
    monkeypatch.delenv("SKH2T_DATA", raising=False)
    monkeypatch.setenv("HOME", "/nonexistent-skh2t-home")
    X, y = load_fashion_mnist(subset="test", return_X_y=True)
    assert X.shape == (10000, 28, 28)
    assert X.dtype == np.uint8
    assert y.dtype == np.int64
    assert np.bincount(y).tolist() == [1000] * 10
    assert OFFICIAL_NAMES[y[0]] == "Ankle boot"
    everything = load_fashion_mnist(subset="all")
    assert everything.images.shape == (70000, 28, 28)
    np.testing.assert_array_equal(everything.images[:60000], debian_train.images)
    np.testing.assert_array_equal(everything.images[60000:], X)
    np.testing.assert_array_equal(everything.target, np.concatenate([debian_train.target, y]))


# --- where the data is looked for ----------------------------------------------


def test_search_order(isolated, monkeypatch):
    tmp = isolated
    explicit = write_fake(tmp / "explicit" / "fashion-mnist", n_train=5)
    env = write_fake(tmp / "env" / "fashion-mnist", n_train=6)
    write_fake(tmp / "home" / "skh2t_data" / "fashion-mnist", n_train=7)
    write_fake(tmp / "debian" / "fashion-mnist", n_train=8)
    monkeypatch.setenv("SKH2T_DATA", str(env.parent))

    assert len(load_fashion_mnist(data_home=explicit.parent).target) == 5
    assert len(load_fashion_mnist().target) == 6
    monkeypatch.delenv("SKH2T_DATA")
    assert len(load_fashion_mnist().target) == 7
    assert get_data_home() == str(tmp / "home" / "skh2t_data")
    (tmp / "home").rename(tmp / "gone")
    bunch = load_fashion_mnist()
    assert len(bunch.target) == 8
    assert bunch.filenames[0].startswith(str(tmp / "debian"))


def test_data_home_falls_back_when_empty(isolated):
    write_fake(isolated / "debian" / "fashion-mnist", n_train=8)
    assert len(load_fashion_mnist(data_home=isolated / "empty").target) == 8


def test_data_home_holding_the_files_directly_and_uncompressed(isolated):
    folder = write_fake(isolated / "raw", n_train=4, n_test=2, compress=False)
    bunch = load_fashion_mnist(subset="all", data_home=str(folder))
    assert bunch.images.shape == (6, 28, 28)
    np.testing.assert_array_equal(bunch.images[:4], fake_split(4, seed=4)[0])
    np.testing.assert_array_equal(bunch.target, [0, 1, 2, 3, 0, 1])
    assert bunch.filenames[0] == str(folder / "train-images-idx3-ubyte")


def test_data_home_with_tilde(isolated):
    write_fake(isolated / "home" / "mydata" / "fashion-mnist", n_train=3)
    assert len(load_fashion_mnist(data_home="~/mydata").target) == 3


def test_a_folder_needs_only_the_files_of_the_subset(isolated):
    write_fake(isolated / "explicit", n_test=4, splits=("test",))
    write_fake(isolated / "debian" / "fashion-mnist", n_train=8, n_test=9)
    assert len(load_fashion_mnist(subset="test", data_home=isolated / "explicit").target) == 4
    # The explicit folder lacks the training files: the next folder is used.
    assert len(load_fashion_mnist(subset="train", data_home=isolated / "explicit").target) == 8
    assert len(load_fashion_mnist(subset="all", data_home=isolated / "explicit").target) == 17


@pytest.mark.parametrize("subset", ["validation", "TRAIN", None])
def test_invalid_subset(isolated, subset):
    with pytest.raises(ValueError, match="subset must be 'train', 'test' or 'all'"):
        load_fashion_mnist(subset=subset)


def test_not_found_message(isolated, monkeypatch):
    monkeypatch.setenv("SKH2T_DATA", str(isolated / "env"))
    with pytest.raises(FileNotFoundError) as info:
        load_fashion_mnist(data_home=isolated / "explicit")
    message = str(info.value)
    assert message.startswith("Fashion-MNIST not found")
    assert "apt-get install dataset-fashion-mnist" in message
    assert "download=True" in message
    assert "data_home=" in message
    assert "SKH2T_DATA" in message
    assert "train-images-idx3-ubyte.gz" in message
    for folder in ["explicit", "env", "home/skh2t_data/fashion-mnist", "debian/fashion-mnist"]:
        assert str(isolated / folder) in message


def test_get_data_home(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("SKH2T_DATA", raising=False)
    assert get_data_home() == str(tmp_path / "skh2t_data")
    monkeypatch.setenv("SKH2T_DATA", "~/elsewhere")
    assert get_data_home() == str(tmp_path / "elsewhere")
    assert get_data_home(tmp_path / "x") == str(tmp_path / "x")
    assert not (tmp_path / "elsewhere").exists()  # nothing is created


# --- corrupted files -------------------------------------------------------------


def _truncate_gzip(data):
    return data[: len(data) // 2]


def _bad_magic(data):
    raw = bytearray(gzip.decompress(data))
    raw[0] = 7
    return gzip.compress(bytes(raw))


def _bad_dtype_code(data):
    raw = bytearray(gzip.decompress(data))
    raw[2] = 0x42
    return gzip.compress(bytes(raw))


def _short_payload(data):
    return gzip.compress(gzip.decompress(data)[:-1])


def _trailing_bytes(data):
    return gzip.compress(gzip.decompress(data) + b"\x00")


def _truncated_header(data):
    return gzip.compress(gzip.decompress(data)[:10])


def _not_an_idx_file(data):
    return b"<html>Not found</html>"


def _empty(data):
    return b""


@pytest.mark.parametrize(
    ("corrupt", "match"),
    [
        (_truncate_gzip, "corrupted or truncated"),
        (_bad_magic, "bad magic number"),
        (_bad_dtype_code, "bad magic number"),
        (_short_payload, "truncated: header announces 5488 bytes of data, found 5487"),
        (_trailing_bytes, "unexpected data after"),
        (_truncated_header, "truncated while reading the dimensions"),
        (_not_an_idx_file, "bad magic number"),
        (_empty, "truncated while reading the magic number"),
    ],
)
def test_corrupted_image_file(isolated, corrupt, match):
    folder = write_fake(isolated / "data", n_train=7)
    path = folder / "train-images-idx3-ubyte.gz"
    path.write_bytes(corrupt(path.read_bytes()))
    with pytest.raises(ValueError, match=match) as info:
        load_fashion_mnist(data_home=folder)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    ("stem", "array", "match"),
    [
        ("train-images-idx3-ubyte", np.zeros((7, 32, 32), np.uint8), "not a Fashion-MNIST image"),
        ("train-images-idx3-ubyte", np.zeros((7, 784), np.uint8), "not a Fashion-MNIST image"),
        ("train-labels-idx1-ubyte", np.zeros((7, 1), np.uint8), "not a Fashion-MNIST label"),
        ("train-labels-idx1-ubyte", np.zeros(6, np.uint8), "holds 6 labels for 7 images"),
        ("train-labels-idx1-ubyte", np.full(7, 10, np.uint8), "holds label 10"),
    ],
)
def test_wrong_content(isolated, stem, array, match):
    folder = write_fake(isolated / "data", n_train=7)
    (folder / (stem + ".gz")).write_bytes(idx_bytes(array))
    with pytest.raises(ValueError, match=match) as info:
        load_fashion_mnist(data_home=folder)
    assert str(folder / (stem + ".gz")) in str(info.value)


def test_wrong_element_type(isolated):
    folder = write_fake(isolated / "data", n_train=7)
    labels = np.arange(7, dtype=">i4")
    (folder / "train-labels-idx1-ubyte.gz").write_bytes(idx_bytes(labels, dtype_code=0x0C))
    with pytest.raises(ValueError, match="expected a 1-d uint8 array, got int32"):
        load_fashion_mnist(data_home=folder)


@pytest.mark.parametrize(
    ("code", "dtype"),
    [
        (0x08, np.uint8),
        (0x09, np.int8),
        (0x0B, np.int16),
        (0x0C, np.int32),
        (0x0D, np.float32),
        (0x0E, np.float64),
    ],
)
@pytest.mark.parametrize("compress", [True, False])
def test_read_idx_round_trip(tmp_path, code, dtype, compress):
    array = (np.arange(24).reshape(2, 3, 4) - 5).astype(dtype)
    path = tmp_path / "x.idx"
    path.write_bytes(idx_bytes(array, dtype_code=code, compress=compress))
    result = read_idx(path)
    assert result.dtype == np.dtype(dtype)
    assert result.dtype.isnative
    assert result.flags.writeable
    np.testing.assert_array_equal(result, array)


def test_read_idx_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_idx(tmp_path / "missing.gz")


def test_read_idx_implausible_shape(tmp_path):
    path = tmp_path / "huge.idx"
    path.write_bytes(bytes([0, 0, 8, 3]) + struct.pack(">3I", 2**32 - 1, 2**32 - 1, 2**32 - 1))
    with pytest.raises(ValueError, match=r"huge\.idx.*(implausible shape|truncated)"):
        read_idx(path)


# --- downloading -------------------------------------------------------------------


class FakeServer:
    """Stands in for ``urlopen``: serves bytes per URL and records requests."""

    def __init__(self, served):
        self.served = served
        self.requested = []

    def __call__(self, url, timeout=None):
        self.requested.append(url)
        content = self.served.get(url)
        if content is None:
            raise URLError("Name or service not known")
        if isinstance(content, Exception):
            raise content
        return io.BytesIO(content)


def fake_official_files(n_train=6, n_test=4):
    files = {}
    for split, n in [("train", n_train), ("test", n_test)]:
        images, labels = fake_split(n, seed=n)
        image_stem, label_stem = FILES[split]
        files[image_stem + ".gz"] = idx_bytes(images)
        files[label_stem + ".gz"] = idx_bytes(labels)
    return files


@pytest.fixture
def fake_mirrors(monkeypatch):
    """Fake official files, their MD5s as the official checksums, and a server."""
    files = fake_official_files()
    for name, content in files.items():
        monkeypatch.setitem(_fashion_mnist.MD5, name, hashlib.md5(content).hexdigest())
    server = FakeServer({})
    monkeypatch.setattr(_download, "urlopen", server)
    return files, server


def test_official_checksums_and_mirrors():
    assert _fashion_mnist.MD5 == {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    }
    assert _fashion_mnist.MIRRORS[0].startswith("https://raw.githubusercontent.com/")
    assert all(m.endswith("/") for m in _fashion_mnist.MIRRORS)


def test_download(isolated, fake_mirrors):
    files, server = fake_mirrors
    first = _fashion_mnist.MIRRORS[0]
    server.served = {first + name: content for name, content in files.items()}
    bunch = load_fashion_mnist(subset="test", data_home=isolated / "dl", download=True)

    target = isolated / "dl" / "fashion-mnist"
    assert server.requested == [
        first + "t10k-images-idx3-ubyte.gz",
        first + "t10k-labels-idx1-ubyte.gz",
    ]
    assert sorted(os.listdir(target)) == ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
    assert (target / "t10k-images-idx3-ubyte.gz").read_bytes() == files["t10k-images-idx3-ubyte.gz"]
    np.testing.assert_array_equal(bunch.images, fake_split(4, seed=4)[0])

    # Second call: found locally, nothing is downloaded; the other split is.
    load_fashion_mnist(subset="test", data_home=isolated / "dl", download=True)
    assert len(server.requested) == 2
    bunch = load_fashion_mnist(subset="all", data_home=isolated / "dl", download=True)
    assert len(server.requested) == 4
    assert len(bunch.target) == 10


def test_download_goes_to_env_data_home(isolated, fake_mirrors, monkeypatch):
    files, server = fake_mirrors
    server.served = {_fashion_mnist.MIRRORS[0] + n: c for n, c in files.items()}
    monkeypatch.setenv("SKH2T_DATA", str(isolated / "env"))
    load_fashion_mnist(download=True)
    assert (isolated / "env" / "fashion-mnist" / "train-images-idx3-ubyte.gz").is_file()


def test_no_download_when_found_locally(isolated, monkeypatch):
    write_fake(isolated / "debian" / "fashion-mnist")
    server = FakeServer({})
    monkeypatch.setattr(_download, "urlopen", server)
    load_fashion_mnist(download=True)
    assert server.requested == []


def test_download_bad_checksum_falls_back_to_next_mirror(isolated, fake_mirrors):
    files, server = fake_mirrors
    first, second = _fashion_mnist.MIRRORS
    server.served = {first + name: b"tampered" + content for name, content in files.items()}
    server.served.update({second + name: content for name, content in files.items()})
    bunch = load_fashion_mnist(subset="test", data_home=isolated / "dl", download=True)
    assert server.requested[:2] == [
        first + "t10k-images-idx3-ubyte.gz",
        second + "t10k-images-idx3-ubyte.gz",
    ]
    np.testing.assert_array_equal(bunch.images, fake_split(4, seed=4)[0])


def test_download_failure(isolated, fake_mirrors):
    files, server = fake_mirrors
    first, second = _fashion_mnist.MIRRORS
    name = "train-images-idx3-ubyte.gz"
    server.served = {first + name: b"tampered" + files[name]}  # second mirror: unreachable
    with pytest.raises(OSError, match=f"Could not download {name}") as info:
        load_fashion_mnist(data_home=isolated / "dl", download=True)
    message = str(info.value)
    expected = _fashion_mnist.MD5[name]
    assert f"{first + name}: checksum mismatch" in message
    assert f"expected {expected}" in message
    assert f"{second + name}: <urlopen error Name or service not known>" in message
    # Nothing was written: no corrupted file, no temporary file.
    assert os.listdir(isolated / "dl" / "fashion-mnist") == []


def test_download_interrupted_leaves_no_partial_file(tmp_path, monkeypatch):
    class Dropping(io.BytesIO):
        def read(self, size=-1):
            if self.tell() > 0:
                raise ConnectionResetError("connection reset by peer")
            return super().read(4)

    monkeypatch.setattr(_download, "urlopen", lambda url, timeout: Dropping(b"0123456789"))
    path = tmp_path / "sub" / "file.gz"
    with pytest.raises(OSError, match="connection reset by peer"):
        _download.download_file(["https://example.org/file.gz"], str(path), "0" * 32)
    assert os.listdir(tmp_path / "sub") == []


def test_download_incomplete_http_read(tmp_path, monkeypatch):
    class Incomplete(io.BytesIO):
        def read(self, size=-1):
            raise http.client.IncompleteRead(b"0123", 10)

    monkeypatch.setattr(_download, "urlopen", lambda url, timeout: Incomplete())
    with pytest.raises(OSError, match="IncompleteRead"):
        _download.download_file(["https://a/f"], str(tmp_path / "f"), "0" * 32)
    assert os.listdir(tmp_path) == []


def test_download_replaces_atomically(tmp_path, monkeypatch):
    content = b"new content"
    server = FakeServer({"https://a/f": content})
    monkeypatch.setattr(_download, "urlopen", server)
    path = tmp_path / "f"
    path.write_bytes(b"old")
    md5 = hashlib.md5(content).hexdigest().upper()  # case-insensitive comparison
    assert _download.download_file(["https://a/f"], str(path), md5) == str(path)
    assert path.read_bytes() == content
    assert os.listdir(tmp_path) == ["f"]
    # A failed download keeps the previous file untouched.
    with pytest.raises(OSError, match="checksum mismatch"):
        _download.download_file(["https://a/f"], str(path), "0" * 32)
    assert path.read_bytes() == content
    assert os.listdir(tmp_path) == ["f"]
