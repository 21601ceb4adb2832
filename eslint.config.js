// ESLint with typescript-eslint's type-checked rules: `npm run lint` (with knip), run by .ci/run before the tests.
import js from "@eslint/js";
import tseslint from "typescript-eslint";

/** node:test's describe/it/before/after return promises the runner itself awaits. */
const nodeTestCalls = [{ from: "package", package: "node:test", name: ["describe", "it", "test", "before", "after", "beforeEach", "afterEach"] }];

export default tseslint.config(
  { ignores: ["dist/**", ".dist-test/**", "node_modules/**", "bench/peers/**", "bench/models/**", "bench/results/**", "test/.fixtures/**"] },
  js.configs.recommended,
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      "@typescript-eslint/no-floating-promises": ["error", { allowForKnownSafeCalls: nodeTestCalls }],
      // `_`-prefixed names are deliberately unused (destructuring a field away, a parameter kept for its place).
      "@typescript-eslint/no-unused-vars": ["error", { argsIgnorePattern: "^_", varsIgnorePattern: "^_", destructuredArrayIgnorePattern: "^_" }],
    },
  },
  {
    // Tests and benchmarks read JSON answers of the daemon, typed as what they are: unknown shapes.
    files: ["test/**", "testing/**", "bench/**"],
    rules: {
      "@typescript-eslint/no-explicit-any": "off",
      "@typescript-eslint/no-unsafe-member-access": "off",
      "@typescript-eslint/no-unsafe-argument": "off",
      "@typescript-eslint/no-unsafe-assignment": "off",
      "@typescript-eslint/no-unsafe-call": "off",
      "@typescript-eslint/no-unsafe-return": "off",
    },
  },
  {
    files: ["**/*.js", "**/*.mjs"],
    ...tseslint.configs.disableTypeChecked,
  },
  {
    // The plain-JS files (bin/, scripts/*.mjs) run on Node: its globals, which `no-undef` otherwise reports
    // (the .ts files need no list: TypeScript checks their names against @types/node).
    files: ["**/*.js", "**/*.mjs"],
    languageOptions: {
      globals: {
        process: "readonly", console: "readonly", URL: "readonly", Buffer: "readonly", performance: "readonly", fetch: "readonly",
        setTimeout: "readonly", clearTimeout: "readonly", setInterval: "readonly", clearInterval: "readonly",
      },
    },
  },
);
