DROP INDEX dead_letters_open_once;
