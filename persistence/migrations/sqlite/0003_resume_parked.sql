-- Nothing to grant in SQLite; kept so both backends share migration numbers.
SELECT 1;
