"""What every layer needs: errors, run-folder names, ranks and barriers, progress and notices, UTF-8 checks."""
