from jobs.scheduler import main

main()
