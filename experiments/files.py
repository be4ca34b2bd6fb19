"""Files written atomically: a reader never sees a part of one.

Every writer of this project's files goes through here: the run's workdir
(`experiments.workdir`), the data caches, the sweeps' tables and records.
A file is written beside its destination under a unique name, then renamed
over it (`write_atomic`); a folder is built under a unique name, then moved
(`staged_folder`). A killed writer leaves the old file or the new one.
"""

import contextlib
import json
import os
import pathlib
import shutil
import tempfile
from typing import Callable, Union


def _umask() -> int:
  mask = os.umask(0)
  os.umask(mask)
  return mask


# New files get the permissions open() would give them (mkstemp's are 0600).
_FILE_MODE = 0o666 & ~_umask()


@contextlib.contextmanager
def staged_folder(dest):
  """Builds a folder under a unique temporary name, then moves it to ``dest``.

  The body of the ``with`` fills the folder it is given; when it ends, the
  folder replaces ``dest`` (which must be absent or an empty folder), so a
  reader never sees a part of it. On an error nothing is left behind.

  Example:
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as parent:
    ...   with staged_folder(os.path.join(parent, 'out')) as staging:
    ...     write_atomic(os.path.join(staging, 'a.txt'), 'one')
    ...   print(os.listdir(parent), os.listdir(os.path.join(parent, 'out')))
    ['out'] ['a.txt']
  """
  dest = os.fspath(dest)
  parent = os.path.dirname(dest)
  os.makedirs(parent, exist_ok=True)
  staging = tempfile.mkdtemp(dir=parent, prefix=f'.{os.path.basename(dest)}-')
  try:
    yield staging
    if os.path.isdir(dest):
      os.rmdir(dest)  # an empty folder; a full one is an OSError
    os.replace(staging, dest)
  except BaseException:
    shutil.rmtree(staging, ignore_errors=True)
    raise


def write_atomic(path, content: Union[bytes, str, Callable]) -> None:
  """Replaces ``path`` with ``content``, atomically.

  The content goes to a file of a unique name in the same folder
  (`tempfile.mkstemp`), which is then renamed over ``path``: a reader, or a
  writer killed midway, sees the old file or the new one, never a part, and
  two writers never share a temporary file.

  Args:
    path: the file to replace; its folder exists.
    content: bytes, text (written as UTF-8), or a function that writes to
      the open binary file it is given (``np.save``, ``tarfile``, ...).

  Example:
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...   write_atomic(os.path.join(folder, 'a.txt'), 'one')
    ...   write_atomic(os.path.join(folder, 'a.txt'), b'two')
    ...   print(os.listdir(folder), open(os.path.join(folder, 'a.txt')).read())
    ['a.txt'] two
  """
  path = os.fspath(path)
  fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or '.',
                             prefix=os.path.basename(path) + '.',
                             suffix='.tmp')
  try:
    with os.fdopen(fd, 'wb') as f:
      if callable(content):
        content(f)
      else:
        f.write(content.encode() if isinstance(content, str) else content)
    os.chmod(tmp, _FILE_MODE)
    os.replace(tmp, path)
  except BaseException:
    try:
      os.unlink(tmp)
    except OSError:
      pass
    raise


def write_json(path, obj) -> None:
  """Writes ``obj`` as indented JSON with sorted keys, atomically."""
  write_atomic(path, json.dumps(obj, indent=2, sort_keys=True))


def read_json(path):
  """Reads a JSON file; a file that is not valid JSON is a ValueError."""
  try:
    return json.loads(pathlib.Path(path).read_text())
  except json.JSONDecodeError as e:
    raise ValueError(f'{path} is not valid JSON: {e}') from None
