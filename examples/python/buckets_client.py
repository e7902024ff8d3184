"""A small bucket client: python buckets_client.py -p PORT [--vocabulary eafit] COMMAND ARGS...

Commands: ls [BUCKET] | mb BUCKET | rb BUCKET | put BUCKET PATH [NAME] | get BUCKET NAME DEST
| rm BUCKET NAME. Errors are one line on standard error and exit status 1.
"""

import argparse
import sys

from cartero.buckets import BucketsError, Client


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-s", "--server", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, default=1234)
    parser.add_argument("--vocabulary", choices=["codes", "eafit"], default="codes")
    parser.add_argument("command", choices=["ls", "mb", "rb", "put", "get", "rm"])
    parser.add_argument("args", nargs="*")
    a = parser.parse_args()
    try:
        with Client(a.server, a.port, vocabulary=a.vocabulary) as c:
            if a.command == "ls" and not a.args:
                for b in c.list_buckets():
                    print(b)
            elif a.command == "ls":
                for f in c.list_files(a.args[0]):
                    print(f"{f.name} {f.size}")
            elif a.command == "mb":
                c.create_bucket(a.args[0])
            elif a.command == "rb":
                c.delete_bucket(a.args[0])
            elif a.command == "put":
                c.upload(a.args[0], a.args[1], a.args[2] if len(a.args) > 2 else None)
            elif a.command == "get":
                c.download(a.args[0], a.args[1], a.args[2])
            elif a.command == "rm":
                c.delete_file(a.args[0], a.args[1])
    except (BucketsError, OSError, IndexError) as e:
        print(f"buckets_client: {e or 'missing argument'}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
