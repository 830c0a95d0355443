from meshctl.main import main

main()
