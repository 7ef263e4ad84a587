from edgekit.cli import console_main

console_main()
