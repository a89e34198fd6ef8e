"""``python -m dart`` behaves exactly like the ``dart`` executable."""

from dart.cli import main

if __name__ == "__main__":
    main()
