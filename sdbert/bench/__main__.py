from sdbert.bench.e2e import main

main()
