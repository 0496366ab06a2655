from sagegate.cli import main

main()
