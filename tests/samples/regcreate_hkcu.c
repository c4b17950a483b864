/* Harmless test sample: RegCreateKeyA on HKEY_CURRENT_USER. speakeasy 1.5.11's
 * RegCreateKey handler raises on this predefined key (an emulator bug), which the
 * sandbox analyzer must report as a clear step error. */
#include <windows.h>

int main(void)
{
    HKEY key;

    if (RegCreateKeyA(HKEY_CURRENT_USER, "Software\\PcapwireTest", &key) == ERROR_SUCCESS)
        RegCloseKey(key);
    return 0;
}
