/* Preloaded into the sanitizer build's tests: dlclose does nothing, so the Vulkan layers and drivers
 * the loader unloads stay mapped and LeakSanitizer can name the module of what they keep for the
 * life of the process (lsan.supp suppresses those by module; an unnamed leak could be ours). */
int dlclose(void *handle);
int dlclose(void *handle) {
  (void)handle;
  return 0;
}
