import { testKeys } from "../../testing/src/platform.js";

/**
 * Values that must never appear in any log of the test suite. Tests plant them where a careless
 * log would pick them up (API keys on calls, card numbers and emails in rows and in the
 * parameters of failing queries, a marker in uploaded file content); every logger of every
 * process a test starts also writes to LATHE_TEST_LOG_DIR (see createLogger), and
 * scripts/test-log-scan.ts fails the run if one of these is found there. Plain ASCII with nothing
 * JSON escapes, so a log line holds them as written.
 */
export const plantedSecrets = {
  "API key of the test tenant acme": testKeys.acme,
  "API key of the test tenant globex": testKeys.globex,
  "planted API key": "key-planted-3c9e71d0b2a84f65",
  "planted unknown API key": "key-unknown-5d2f8a61c7e94b03",
  "planted card number": "4539148803436467",
  "planted email": "jordan.planted.leak@example.com",
  "planted file content": "PLANTEDCONTENT8b41e6f2a9d3",
  "planted teacher API key": "sk-teacher-planted-7e3b91c4d2a05f68",
} as const;
