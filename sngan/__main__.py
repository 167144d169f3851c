from sngan.cli import main

main()
