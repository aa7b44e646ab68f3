from bitextmine.cli import main

if __name__ == "__main__":  # tokenizer processes (spawn) import this module again as __mp_main__
    main()
